"""The Daily Mix page in a real browser: headless Chromium against a running Airflow API server after a demo run.

The pipeline runs through Airflow on a tiny world (three nights, so the health charts have a trend), then
`airflow api-server` serves the UI with the project's plugins folder, and Chromium (driven by chromedriver)
opens the "Daily Mix" entry, looks a user up through the form and checks what is rendered. The screenshot it
saves is the one the README shows (docs/images/daily-mix-page.png).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.core.config import PROJECT_ROOT, Settings
from pipeline.ops.airflow_env import airflow_env
from pipeline.publish.files import read_publication
from tests.helpers import NIGHTS

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "daily-mix-page.png"
DAG_IDS = ("dailymix_features", "dailymix_retrain", "dailymix_index", "dailymix_nightly", "dailymix_monitor")

if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium chromium-driver; .ci/run does this "
                "when run as root)", allow_module_level=True)


@pytest.fixture(scope="module")
def home(tiny_world: Settings) -> Path:
    """The e2e tier's tiny world (tests/e2e/conftest.py), or a data root named by DAILYMIX_PAGE_TEST_HOME (one a
    previous run left: the browser part then reruns in a minute instead of redoing the DAG runs)."""
    if os.environ.get("DAILYMIX_PAGE_TEST_HOME"):
        return Path(os.environ["DAILYMIX_PAGE_TEST_HOME"])
    return tiny_world.home


def _free_port(start: int = 28080) -> int:
    for port in range(start, start + 200):
        with contextlib.closing(socket.socket()) as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError(f"no free port in {start}..{start + 199}")


@pytest.fixture(scope="module")
def airflow_url(home: Path) -> Iterator[str]:
    """`airflow api-server` on a free port with the project's plugins; simple auth manager, everyone admin."""
    port = _free_port()
    env = airflow_env(home) | {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                               "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple."
                                                              "simple_auth_manager.SimpleAuthManager",
                               "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}"}
    log = home / "airflow" / "logs" / "api-server.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(Path(sys.executable).with_name("airflow")), "api-server", "--port", str(port),
                                   "--host", "127.0.0.1", "--workers", "1"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{url}/api/v2/monitor/health", server, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"airflow api-server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(1)
    pytest.fail(f"airflow api-server not up after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_plugin_is_loaded_with_its_nav_entry(airflow_url: str) -> None:
    plugins = _get_json(f"{airflow_url}/api/v2/plugins")["plugins"]
    mine = next(p for p in plugins if p["name"] == "dailymix")
    assert [a["url_prefix"] for a in mine["fastapi_apps"]] == ["/dailymix"]
    assert [(v["name"], v["url_route"]) for v in mine["external_views"]] == [("Daily Mix", "daily-mix")]
    assert _get_json(f"{airflow_url}/api/v2/importErrors")["total_entries"] == 0


def test_every_dag_page_shows_its_doc(airflow_url: str) -> None:
    for dag_id in DAG_IDS:
        doc = _get_json(f"{airflow_url}/api/v2/dags/{dag_id}/details")["doc_md"] or ""
        assert "Runbook" in doc and "Inputs" in doc and "Outputs" in doc, f"{dag_id} doc_md: {doc[:200]!r}"


def test_daily_mix_page_looks_up_a_user_and_renders_mixes_and_charts(airflow_url: str, home: Path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    manifest, slots = read_publication(Settings(home=home))
    user = int(slots["user_id"].value_counts().index[0])  # the user with the most mixes
    expected_mixes = slots.loc[slots["user_id"] == user, "mix_index"].nunique()

    browser.get(f"{airflow_url}/plugin/daily-mix")  # the nav entry: Airflow's UI with the page in an iframe
    WebDriverWait(browser, 60).until(ec.frame_to_be_available_and_switch_to_it((By.TAG_NAME, "iframe")))
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "lookup")))
    field = browser.find_element(By.ID, "user")
    field.clear()
    field.send_keys(str(user))
    browser.find_element(By.ID, "show").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "mixes")))

    mixes = browser.find_elements(By.CSS_SELECTOR, "#mixes .mix")
    assert len(mixes) == expected_mixes >= 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#mixes tr.track")) == expected_mixes * 30
    heading = browser.find_element(By.CSS_SELECTOR, "#mixes h2").text
    assert f"User {user}" in heading and manifest["date"] in heading
    lineage = browser.find_element(By.CSS_SELECTOR, "#mixes .lineage")
    links = [a.get_attribute("href") for a in lineage.find_elements(By.TAG_NAME, "a")]
    assert links[0].endswith(f"#/models/dailymix-ranker/versions/{manifest['lineage']['model_version']}")
    assert "/dags/dailymix_nightly/runs/" in links[1]
    charts = browser.find_elements(By.CSS_SELECTOR, "#health svg.chart")
    assert len(charts) >= 4
    assert all(len(c.find_elements(By.TAG_NAME, "circle")) >= NIGHTS for c in charts[:2])  # a point per night
    assert browser.find_elements(By.CSS_SELECTOR, "#skew .ok, #skew .failed")

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.switch_to.default_content()
    browser.set_window_size(1400, min(height + 250, 3000))  # the whole page, in Airflow's frame
    time.sleep(1)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
