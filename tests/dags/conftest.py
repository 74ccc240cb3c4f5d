"""A hermetic Airflow for the DAG integrity tests, the DagBag, and fresh-process probes of each DAG file.

The environment is set when this conftest is imported, i.e. before anything imports airflow:
Airflow reads AIRFLOW_HOME and its config once, on first import, and the tests are parametrised
over the DagBag, which is therefore built while tests are being collected.

It mirrors `pipeline.ops.airflow_env.airflow_env`: a throw-away AIRFLOW_HOME and DAILYMIX_HOME, the project's
`dags/` and `plugins/`, no example DAGs. Parsing needs no metadata database, so none is created.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = PROJECT_ROOT / "dags"

_TMP = Path(tempfile.mkdtemp(prefix="dailymix-dag-tests-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)

AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_TMP / "airflow"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "DAILYMIX_HOME": str(_TMP / "dailymix"),
    "GE_USAGE_STATS": "False",
    "FEAST_USAGE": "False",
}
_AIRFLOW_IMPORTED_TOO_EARLY = "airflow" in sys.modules
os.environ.update(AIRFLOW_ENV)


@pytest.fixture(scope="session", autouse=True)
def airflow_env() -> dict[str, str]:
    """The environment every test (and every probe subprocess) runs Airflow with."""
    if _AIRFLOW_IMPORTED_TOO_EARLY:
        pytest.fail("airflow was imported before tests/dags/conftest.py set AIRFLOW_HOME; its config is not hermetic")
    for key, value in AIRFLOW_ENV.items():
        assert os.environ.get(key) == value, f"{key} was changed during the session"
    return {**os.environ, **AIRFLOW_ENV}


@functools.cache
def load_dagbag():
    """Parse `dags/` once, as the dag processor does for the default `dags-folder` bundle.

    Airflow 3.3's DagBag lives in `airflow.dag_processing.dagbag` (re-exported lazily as
    `airflow.models.DagBag`) and has no `include_examples` any more: example DAGs are a bundle of
    their own, never mixed into a folder's bag. `BundleDagBag` is what the dag processor and the CLI
    use; unlike a bare `DagBag` it puts the bundle root on sys.path, which the DAG files rely on
    (`from _dailymix import ...`).
    """
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=DAGS_FOLDER, bundle_path=DAGS_FOLDER, bundle_name="dags-folder")


@pytest.fixture(scope="session")
def dagbag():
    return load_dagbag()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `dag_id` over the DagBag, plus any expected DAG missing from it (so its tests fail, not vanish)."""
    if "dag_id" in metafunc.fixturenames:
        expected = set(getattr(metafunc.module, "EXPECTED_DAG_IDS", ()))
        metafunc.parametrize("dag_id", sorted(expected | set(load_dagbag().dags)))


@pytest.fixture
def dag(dagbag, dag_id):
    if dag_id not in dagbag.dags:
        pytest.fail(f"{dag_id} is not in the DagBag; import errors: {sorted(dagbag.import_errors) or 'none'}")
    return dagbag.dags[dag_id]


# --- fresh-process probes ---------------------------------------------------------------------------------------

# Run in a new interpreter per DAG file: import airflow's SDK, then the file by path (with `dags/` on sys.path,
# as the dag processor does), and report timings, every module loaded, and the start_date of each DAG it defines.
# DagContext's auto-registration is how Airflow's own importer collects DAGs created by a `@dag` call.
_PROBE = r"""
import importlib.util, json, sys, time, traceback
path, dags_folder = sys.argv[1], sys.argv[2]
sys.path.insert(0, dags_folder)
started = time.perf_counter()
import airflow.sdk
from airflow.sdk.definitions._internal.contextmanager import DagContext
sdk_loaded = time.perf_counter()
name = "dag_file_under_test"
DagContext.current_autoregister_module_name = name
error = None
try:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
except BaseException:
    error = traceback.format_exc()
finished = time.perf_counter()
print(json.dumps({
    "sdk_s": sdk_loaded - started,
    "file_s": finished - sdk_loaded,
    "total_s": finished - started,
    "error": error,
    "modules": sorted(sys.modules),
    "start_dates": {dag.dag_id: dag.start_date.isoformat() if dag.start_date else None
                    for dag, _ in DagContext.autoregistered_dags},
}))
"""

PROBE_RESULTS: dict[str, dict] = {}


def _probe(path: Path, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), str(DAGS_FOLDER)],
        env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )
    if done.returncode != 0 or not done.stdout.strip():
        return {"error": f"probe exited {done.returncode}\n{done.stderr[-3000:]}", "modules": [], "start_dates": {}}
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def dag_file_probes(airflow_env) -> dict[str, dict]:
    """Probe result per file name in `dags/` (including `_dailymix.py`, which every DAG file imports)."""
    files = sorted(DAGS_FOLDER.glob("*.py"))
    with ThreadPoolExecutor(max_workers=max(1, min(len(files), os.cpu_count() or 1))) as pool:
        results = pool.map(lambda path: _probe(path, airflow_env), files)
        PROBE_RESULTS.update({path.name: result for path, result in zip(files, results, strict=True)})
    return PROBE_RESULTS


def pytest_terminal_summary(terminalreporter) -> None:
    if not PROBE_RESULTS:
        return
    terminalreporter.section("DAG file import times (fresh interpreter)")
    terminalreporter.write_line(f"{'file':<28} {'airflow.sdk':>12} {'file':>8} {'total':>8}")
    for name, result in sorted(PROBE_RESULTS.items()):
        if "total_s" not in result:
            terminalreporter.write_line(f"{name:<28} probe failed")
            continue
        terminalreporter.write_line(
            f"{name:<28} {result['sdk_s']:>11.2f}s {result['file_s']:>7.3f}s {result['total_s']:>7.2f}s")
