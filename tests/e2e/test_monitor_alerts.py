"""The monitor DAG through Airflow: a forced skip-rate jump in simulated feedback fails `drift` and fires the
notifier (alert log); the same week without the jump passes silently.

Mixes are built by the real re-ranker from seeded candidates and published with the real publish step on the
same weekday of consecutive weeks; simulated listeners play them and the events go through the normal ingest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.alerts import alert_log_path, read_alerts
from pipeline.core.config import ListenerConfig, Settings, WorldConfig, save_settings
from pipeline.core.io import atomic_write_json, atomic_write_parquet
from pipeline.core.paths import Layout
from pipeline.features.daily import ingest_day
from pipeline.monitor.health import record_day
from pipeline.ops.airflow_env import DagRun, DagRunFailed, DagRunResult, airflow_db_migrate, run_dag, run_dags
from pipeline.publish.files import publish, read_publication
from pipeline.reranking.rules import rerank_user
from pipeline.sim.listeners import Listeners
from pipeline.sim.world import World, generate_world, write_world

pytestmark = pytest.mark.e2e

WORLD = WorldConfig(seed=5, n_users=60, n_tracks=1500, n_artists=200, history_days=1, plays_per_day=60)
WEEKS = ["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22"]  # same weekday: each week's baseline day
STEADY, JUMP = WEEKS[2], WEEKS[3]
SKIP_JUMP = 0.25


def _slots(settings: Settings, world: World, day: str) -> pd.DataFrame:
    """The same seeded mixes every week (so only listening can move the metrics), dated `day`."""
    catalog = world.catalog[[s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD]]
    frames = []
    for user in world.users[s.USER_ID]:
        rng = np.random.default_rng([settings.seed, int(user)])
        sample = catalog.sample(400, random_state=int(user)).reset_index(drop=True)
        candidates = sample.iloc[:300].assign(**{s.SCORE: rng.random(300), "cluster": 0,
                                                 s.DISCOVERY: np.arange(300) % 2 == 0})
        pool = sample.iloc[300:].assign(**{s.DISCOVERY: True})
        for mix in rerank_user(candidates, ["Mix 1"], pool, settings.rerank, rng):
            frames.append(mix.slots.assign(**{
                s.MIX_TITLE: mix.title, s.MIX_ID: f"{day}:{user}:{mix.index}", s.USER_ID: int(user), s.DATE: day,
                s.MODEL_VERSION: "1", s.INDEX_VERSION: "test", s.FEATURE_VERSION: "test"}))
    return pd.concat(frames, ignore_index=True)[list(s.PUBLISHED_COLUMNS)].astype(s.PUBLISHED_DTYPES)


def _publish_and_listen(settings: Settings, world: World, listeners: Listeners, day: str, skip_shift: float) -> None:
    layout = Layout(settings.home)
    night = layout.nightly(day)
    atomic_write_parquet(_slots(settings, world, day), night / "shard-0000.parquet")
    atomic_write_json({"date": day, "model_version": "1", "index_version": "test", "feature_version": "test"},
                      night / "plan.json")
    publish(settings, str(night / "plan.json"), [str(night / "shard-0000.parquet")], run_id=f"test__{day}")
    _, slots = read_publication(settings, day)
    events = listeners.listen(slots, day, skip_shift)
    layout.landing(day).parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(layout.landing(day), index=False)
    ingest_day(settings, day, contracts=False)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("monitor-home")
    settings = Settings(home=home, world=WORLD)
    save_settings(settings)
    world = generate_world(WORLD)
    write_world(world, Layout(home))
    # No fatigue: listening days are a week apart here, and the test isolates the forced jump.
    listeners = Listeners(world, ListenerConfig(fatigue_per_play=0.0), seed=3)
    for day in WEEKS:
        _publish_and_listen(settings, world, listeners, day, SKIP_JUMP if day == JUMP else 0.0)
    for day in WEEKS[:2]:
        record_day(settings, day, len(world.catalog))  # the baseline weeks, as earlier monitor runs stored them
    airflow_db_migrate(home)
    return settings


def _log_lines(settings: Settings) -> list[dict]:
    path = alert_log_path(settings)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_steady_week_passes_without_alert(monitored: Settings) -> None:
    run_dag(monitored.home, "dailymix_monitor", STEADY)  # raises DagRunFailed if any task failed
    assert read_alerts(monitored, STEADY, "monitor") == []
    assert _log_lines(monitored) == []


def test_skip_rate_jump_fails_drift_and_notifies(monitored: Settings) -> None:
    """Through the one-process runner: the failed run is named, and the runs after it never start."""
    heard: list[DagRunResult] = []
    with pytest.raises(DagRunFailed) as failure:
        run_dags(monitored.home, [DagRun("dailymix_monitor", JUMP), DagRun("dailymix_monitor", STEADY)],
                 on_result=heard.append)
    assert f"dailymix_monitor {JUMP} ended failed" in str(failure.value) and "drift alert" in str(failure.value)
    assert [(r.run.day, r.state) for r in heard] == [(JUMP, "failed")]
    alerts = read_alerts(monitored, JUMP, "monitor")
    assert len(alerts) == 1 and alerts[0].startswith("skip_rate ")
    lines = _log_lines(monitored)
    assert [(line["date"], line["source"], line["alerts"]) for line in lines] == [(JUMP, "monitor", alerts)]
    log = Path(monitored.home / "airflow" / "logs" / "dags-test" / f"runs-{JUMP}..{STEADY}-2.log").read_text()
    assert "alert(s) for" in log  # the notifier ran as the drift task's failure callback
