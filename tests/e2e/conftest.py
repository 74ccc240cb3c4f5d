"""The end-to-end tier's shared set-up: one tiny world run through every DAG, read by every test that only reads.

The run is session-scoped, so it is built once per test session, all its DAG runs in one Airflow process (as
`airflow dags test` runs each): features, retrain, index, nightly and monitor on the last history day, then nightly
+ monitor for the nights before it, so the health charts have a trend.
"""

from __future__ import annotations

import os

import pytest

from pipeline.core.config import Settings, TrainingConfig, save_settings
from pipeline.ops.airflow_env import DagRun
from pipeline.ops.demo import loop_runs, run_loop
from pipeline.sim.world import create_world, history_days
from tests.helpers import NIGHTS, TINY_WORLD

# A failing task retries twice (the DAGs' contract); in tests the wait between tries is short.
os.environ.setdefault("DAILYMIX_RETRY_DELAY_SECONDS", "1")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The tiny world after every DAG ran (see the module docstring). Tests that change it add days after it or
    rerun idempotent steps; none removes what it wrote."""
    home = tmp_path_factory.mktemp("dailymix-e2e")
    settings = Settings(home=home, n_shards=2, world=TINY_WORLD, training=TrainingConfig(holdout_days=1))
    save_settings(settings)
    settings, _ = create_world(settings)
    backfill = [DagRun(dag_id, day) for day in history_days(TINY_WORLD)[-NIGHTS:-1]
                for dag_id in ("dailymix_nightly", "dailymix_monitor")]  # the latest pointer stays on the last night
    run_loop(home, [*loop_runs(home), *backfill], progress=lambda _: None)
    return settings
