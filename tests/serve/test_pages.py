"""The Daily Mix page: the same mixes as the API, charts of every stored metric with alerts marked, the skew gate."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from pipeline.core import schema as s
from pipeline.core.alerts import raise_alerts
from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_json
from pipeline.core.paths import Layout
from pipeline.publish.files import publish, user_mixes
from pipeline.serve.pages import Links, create_pages_app, health_view, line_chart, mixes_view, published_dates
from tests.helpers import DAY, EXPLORE_AT, night_slots, write_plan, write_shards

DAYS = ["2026-10-30", "2026-10-31", DAY]
LINKS = Links(airflow="http://airflow.test", mlflow="http://mlflow.test")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One publication (user 1: two mixes, user 2: one), three days of metrics, one alert, a failed skew gate."""
    settings = Settings(home=tmp_path_factory.mktemp("pages") / "home")
    layout = Layout(settings.home)
    track_ids = list(range(100, 130)) + list(range(200, 230))
    catalog = pd.DataFrame({s.TRACK_ID: track_ids, s.TITLE: [f"Song {t}" for t in track_ids],
                            s.ARTIST_NAME: [f"Artist {10 * t}" for t in track_ids]})
    layout.world.mkdir(parents=True)
    catalog.to_parquet(layout.catalog, index=False)
    publish(settings, write_plan(settings), write_shards(settings, night_slots()), run_id="scheduled__2026-11-01")
    metrics = [  # the middle day has no explore skips, and a metric the page has never heard of appears
        {"date": DAYS[0], "users": 2, "global_genre_entropy": 2.0, "discovery_share": 0.3, "skip_rate_exploit": 0.2,
         "skip_rate_explore": 0.5, "coverage": 0.10},
        {"date": DAYS[1], "users": 2, "global_genre_entropy": 1.5, "discovery_share": 0.3, "skip_rate_exploit": 0.25,
         "skip_rate_explore": None, "coverage": 0.12, "novelty_index": 0.7},
        {"date": DAYS[2], "users": 2, "global_genre_entropy": 1.8, "discovery_share": 0.25, "skip_rate_exploit": 0.2,
         "skip_rate_explore": 0.4, "coverage": 0.11, "novelty_index": 0.6},
    ]
    for row in metrics:
        atomic_write_json(row, layout.monitoring / "metrics" / f"date={row['date']}.json")
    raise_alerts(settings, DAYS[0], "monitor", [])
    raise_alerts(settings, DAYS[1], "monitor", ["global_genre_entropy 1.500 is more than 10% below its mean"])
    validation = layout.home / "validation"
    atomic_write_json({"date": DAY, "model_version": "3", "passed": False, "problems": ["users.completion: mean 0.01"],
                       "data_docs": "x"}, validation / "results" / f"date={DAY}.json")
    docs = validation / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    docs.parent.mkdir(parents=True)
    docs.write_text("<html>GE data docs</html>")
    (layout.home / "secret.txt").write_text("not for the page")
    return settings


@pytest.fixture(scope="module")
def client(root: Settings) -> TestClient:
    return TestClient(create_pages_app(lambda: root, links=lambda _: LINKS))


def test_mixes_are_the_api_contract_plus_names_and_lineage_links(root: Settings) -> None:
    view = mixes_view(root, 1, DAY, LINKS)
    contract = user_mixes(root, 1, DAY)
    assert [m["mix_id"] for m in view["mixes"]] == [m["mix_id"] for m in contract["mixes"]]
    for mix, expected in zip(view["mixes"], contract["mixes"], strict=True):
        assert [{k: t[k] for k in expected["tracks"][0]} for t in mix["tracks"]] == expected["tracks"]
        assert mix["tracks"][0]["title"] == f"Song {mix['tracks'][0]['track_id']}"
        assert mix["discoveries"] == 6 and mix["explored"] == len(EXPLORE_AT)  # 20% of 30; the defaults' slots
        assert mix["links"] == {"model": "http://mlflow.test/#/models/dailymix-ranker/versions/3",
                                "run": "http://airflow.test/dags/dailymix_nightly/runs/scheduled__2026-11-01"}


def test_page_shows_a_users_mixes(client: TestClient) -> None:
    page = client.get("/", params={"user": 1, "date": DAY})
    assert page.status_code == 200
    html = page.text
    assert html.count('class="mix"') == 2 and html.count('class="track"') == 60
    assert "Rock · calm 0" in html and "Song 105" in html and "Artist 1050" in html
    assert html.count('<span class="tag explore">') == 2 * len(EXPLORE_AT)
    assert html.count('<span class="tag discovery">') == 12
    assert 'href="http://mlflow.test/#/models/dailymix-ranker/versions/3"' in html
    assert f'<option value="{DAY}" selected>' in html


def test_unknown_user_and_missing_date_say_so(client: TestClient) -> None:
    assert f"No mixes published for user 99 on {DAY}." in client.get("/", params={"user": 99}).text
    assert "no mixes published for 2020-01-01" in client.get("/", params={"user": 1, "date": "2020-01-01"}).text
    assert client.get("/", params={"user": -1}).status_code == 422
    assert client.get("/", params={"date": "tomorrow"}).status_code == 422


def test_health_charts_every_metric_present_and_marks_alert_days(root: Settings) -> None:
    health = health_view(root)
    assert health["dates"] == DAYS
    titles = [c["title"] for c in health["charts"]]
    assert titles == ["Genre entropy (bits)", "Discovery and exploration share", "Skip rate: exploit vs explore",
                      "Catalog coverage", "novelty_index"]
    skip = health["charts"][2]["svg"]
    assert 'data-metric="skip_rate_exploit"' in skip and 'data-metric="skip_rate_explore"' in skip
    assert skip.count("<circle") == 5  # explore has no value on the middle day
    assert all(c["svg"].count('class="alert-marker"') == 1 for c in health["charts"])  # the empty alert file is none
    assert health["alerts"] == [(DAYS[1], [{"source": "monitor",
                                            "message": "global_genre_entropy 1.500 is more than 10% below its mean"}])]
    assert health_view(root, until=DAYS[0])["dates"] == DAYS[:1]


def test_line_chart_draws_known_points_and_breaks_at_gaps() -> None:
    svg = line_chart(["d1", "d2", "d3", "d4", "d5"], {"m": [1.0, 2.0, None, 3.0, 4.0]}, {}, "{:.1f}",
                     width=160, height=110)  # plot area: x 52..140, y 10..66
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 4
    points = [tuple(map(float, p)) for p in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', svg)]
    pad = 0.3  # 10% of the range 1..4
    assert points[0] == (52.0, pytest.approx(10 + 56 * (4 + pad - 1) / (3 + 2 * pad), abs=0.05))
    assert points[-1] == (140.0, pytest.approx(10 + 56 * pad / (3 + 2 * pad), abs=0.05))
    assert "no data yet" in line_chart([], {}, {})


def test_page_shows_health_and_the_latest_skew_gate(client: TestClient) -> None:
    html = client.get("/").text
    assert html.count("<svg") == 5 and "novelty_index" in html
    assert "global_genre_entropy 1.500 is more than 10% below its mean" in html
    assert 'class="failed">failed' in html and "users.completion: mean 0.01" in html
    assert 'href="data-docs/index.html"' in html
    assert client.get("/data-docs/index.html").text == "<html>GE data docs</html>"
    assert client.get("/data-docs/../../../../secret.txt").status_code == 404
    assert client.get("/data-docs/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt").status_code == 404


def test_an_empty_data_root_renders_with_guidance(tmp_path) -> None:
    html = TestClient(create_pages_app(lambda: Settings(home=tmp_path))).get("/", params={"user": 1}).text
    assert "Nothing published yet" in html and "No monitoring rows yet" in html and "No skew-gate result yet" in html
    assert published_dates(Settings(home=tmp_path)) == []


def test_dependencies_guard_every_route(root: Settings) -> None:
    def deny() -> None:
        raise HTTPException(403, "Forbidden")

    guarded = TestClient(create_pages_app(lambda: root, dependencies=[deny]))
    assert guarded.get("/").status_code == 403
    assert guarded.get("/data-docs/index.html").status_code == 403
