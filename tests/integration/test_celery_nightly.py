"""The nightly on Airflow's CeleryExecutor: Postgres metadata, Redis broker, two Celery workers as processes.

A small world is prepared on the embedded path (features and index through the pipeline functions, the retrain
DAG through `airflow dags test`, logging to an MLflow tracking server on Postgres started here), the nightly
runs once the embedded way (`airflow dags test`, SQLite metadata, mixes to files) as the reference, then on
the Celery cluster (mixes to Postgres); both load the champion from the MLflow server. The published mixes
must match row for row; the mapped shards must have run on both workers; and when a worker is killed
mid-shard, the shard is retried on the other worker with the same result.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline.core.config import ScaleOutConfig, Settings, TrainingConfig, WorldConfig, save_settings
from pipeline.ops.airflow_env import airflow_db_migrate, run_dag
from pipeline.ops.cli import main as cli
from pipeline.ops.cluster import LocalCeleryCluster, celery_env, free_port
from pipeline.publish.files import read_publication
from pipeline.publish.postgres import engine as publish_engine
from pipeline.sim.world import history_days
from tests.integration.services import create_database, database_url, drop_database

pytestmark = pytest.mark.integration

DAG_ID = "dailymix_nightly"
WORLD = WorldConfig(seed=11, n_users=32, n_tracks=1200, n_artists=150, history_days=4, plays_per_day=25)
N_SHARDS = 4
REDIS_DB = 2  # this suite's broker; Redis DBs 2–5 are reserved for it


def prepare_world(home: Path, tracking_uri: str) -> tuple[Settings, str]:
    """World and features for every day in-process; the retrain DAG (`airflow dags test`) logging to the MLflow
    server; the index in-process. Everything reads and writes the same data root and tracking server."""
    from pipeline.candidates.index import build_index, export_embeddings, gate_recall, publish_index
    from pipeline.core.registry import champion
    from pipeline.features.daily import build_offline_features, ingest_day, materialize_online

    settings = Settings(home=home, n_shards=N_SHARDS, world=WORLD, training=TrainingConfig(holdout_days=1),
                        mlflow_tracking_uri=tracking_uri, scale_out=ScaleOutConfig(worker_concurrency=1))
    save_settings(settings)
    assert cli(["--home", str(home), "world"]) == 0
    days = history_days(WORLD)
    for day in days:
        ingest_day(settings, day)
        build_offline_features(settings, day)
        materialize_online(settings, day)
    day = days[-1]
    airflow_db_migrate(home)
    run_dag(home, "dailymix_retrain", day)
    model = champion(settings)
    assert model is not None, "the retrain DAG registered no champion on the MLflow server"
    exported = export_embeddings(settings)
    built = build_index(settings, exported["embeddings_path"], day)
    gate_recall(settings, built["index_version"])
    publish_index(settings, built["index_version"], exported["model_version"])
    return settings, day


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow tracking server on a Postgres backend store, as a process; its URI."""
    import urllib.request

    name = create_database("mlflow")
    port = free_port(18500)
    log = (tmp_path_factory.mktemp("mlflow-server") / "server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", database_url(name), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=2).read().strip() == b"OK":
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, f"MLflow server did not start; {log.name}"
            time.sleep(1)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        drop_database(name)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str, redis_server
             ) -> tuple[Settings, str, pd.DataFrame]:
    """(settings, day, the embedded nightly's published slots), the champion loaded from the MLflow server."""
    home = tmp_path_factory.mktemp("dailymix-celery")
    os.environ.setdefault("DAILYMIX_RETRY_DELAY_SECONDS", "1")
    started = time.perf_counter()
    settings, day = prepare_world(home, mlflow_server)
    prepared = time.perf_counter()
    run_dag(home, DAG_ID, day)
    print(f"\nworld + features (in-process) + retrain DAG (dags test, MLflow server) + index: "
          f"{prepared - started:.1f} s; embedded nightly (dags test, SQLite metadata, mixes to files): "
          f"{time.perf_counter() - prepared:.1f} s")
    return settings, day, read_publication(settings, day)[1]


class Metadata:
    """Reads of the Airflow metadata DB: the run's state and where each task instance ran."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def scalar(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar_one_or_none()

    def run_state(self, run_id: str) -> str | None:
        return self.scalar("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r", d=DAG_ID, r=run_id)

    def task_instances(self, run_id: str, table: str = "task_instance") -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql_query(sa.text(
                f"SELECT task_id, map_index, try_number, state, hostname, pid, start_date, end_date FROM {table} "
                "WHERE dag_id = :d AND run_id = :r ORDER BY task_id, map_index, try_number"), conn,
                params={"d": DAG_ID, "r": run_id})


@pytest.fixture(scope="module")
def cluster(embedded, tmp_path_factory) -> Iterator[tuple[LocalCeleryCluster, Metadata, Settings]]:
    import redis

    settings, _, _ = embedded
    metadata_db, publish_db = create_database("airflow"), create_database("pub")
    broker = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    broker.flushdb()
    env = celery_env(settings.home, database_url(metadata_db), f"redis://127.0.0.1:6379/{REDIS_DB}",
                     free_port(18080), secrets.token_urlsafe(32))
    env.update({
        "DAILYMIX_PUBLISH_DB_URL": database_url(publish_db),
        "DAILYMIX_RETRY_DELAY_SECONDS": "1",
        # A lost worker's task is declared dead after 20 s without a heartbeat (default 300 s).
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    })
    stack = LocalCeleryCluster(env)
    metadata = Metadata(database_url(metadata_db))
    try:
        started = time.perf_counter()
        stack.airflow("db", "migrate", timeout=600)
        migrated = time.perf_counter()
        stack.start()
        stack.wait_until(stack.workers_ready, "both Celery workers ready", timeout=240)
        stack.wait_until(lambda: metadata.scalar("SELECT 1 FROM serialized_dag WHERE dag_id = :d", d=DAG_ID),
                         f"{DAG_ID} parsed by the dag-processor", timeout=240)
        stack.airflow("dags", "unpause", DAG_ID)
        print(f"cluster: db migrate {migrated - started:.1f} s, components up and DAG parsed "
              f"{time.perf_counter() - migrated:.1f} s (api-server :{env['AIRFLOW__API__PORT']})")
        yield stack, metadata, settings.model_copy(
            update={"scale_out": settings.scale_out.model_copy(update={"publish_database_url": env[
                "DAILYMIX_PUBLISH_DB_URL"]})})
    finally:
        stack.stop()
        metadata.engine.dispose()
        publish_engine.cache_clear()
        drop_database(metadata_db)
        drop_database(publish_db)
        broker.flushdb()


def run_and_wait(stack: LocalCeleryCluster, metadata: Metadata, run_id: str, *trigger_args: str,
                 while_running=None) -> float:
    started = time.perf_counter()
    stack.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, *trigger_args)
    if while_running:
        while_running()
    state = stack.wait_until(lambda: (s := metadata.run_state(run_id)) in ("success", "failed") and s,
                             f"run {run_id} finished", timeout=600)
    elapsed = time.perf_counter() - started
    tis = metadata.task_instances(run_id)
    print(f"\nrun {run_id}: {state} in {elapsed:.1f} s (trigger → finished)")
    print(tis.assign(seconds=(tis.end_date - tis.start_date).dt.total_seconds().round(1))
          .drop(columns=["start_date", "end_date"]).to_string(index=False))
    assert state == "success", f"run {run_id} ended {state}; logs in {stack.log_dir}"
    return elapsed


def assert_same_mixes(settings: Settings, day: str, reference: pd.DataFrame) -> None:
    _, published = read_publication(settings, day)
    # Values row for row; dtypes may differ in representation only (Postgres text reads back as object where the
    # shard files kept pandas' string dtype for genre and mood).
    pd.testing.assert_frame_equal(published, reference, check_dtype=False)
    print(f"published mixes in Postgres == embedded run's, row for row: {len(published)} slots, "
          f"{published.user_id.nunique()} users")


def test_nightly_on_two_celery_workers_publishes_the_embedded_mixes(embedded, cluster) -> None:
    _, day, reference = embedded
    stack, metadata, pg_settings = cluster
    run_and_wait(stack, metadata, f"celery__{day}", "--logical-date", f"{day}T00:00:00+00:00")
    scores = metadata.task_instances(f"celery__{day}").query("task_id == 'score'")
    assert sorted(scores.map_index) == list(range(N_SHARDS)) and (scores.state == "success").all()
    spread = scores.groupby("hostname").map_index.apply(sorted).to_dict()
    print(f"shard → worker: {spread}")
    assert set(spread) == set(stack.workers), f"the shards did not spread over both workers: {spread}"
    assert_same_mixes(pg_settings, day, reference)


def test_a_worker_killed_mid_shard_is_retried_on_the_other_worker(embedded, cluster) -> None:
    _, day, reference = embedded
    stack, metadata, pg_settings = cluster
    with publish_engine(pg_settings.scale_out.publish_database_url).begin() as conn:  # the rerun must republish
        conn.execute(sa.text("DELETE FROM dailymix_current; DELETE FROM dailymix_slot; "
                             "DELETE FROM dailymix_publication"))
    run_id, victim = f"celery_kill__{day}", stack.workers[1]
    killed: dict = {}

    def kill_victim_mid_shard() -> None:
        def victim_running():
            tis = metadata.task_instances(run_id)
            running = tis[(tis.task_id == "score") & (tis.state == "running") & (tis.hostname == victim)]
            return running.iloc[0].to_dict() if len(running) else None

        killed.update(stack.wait_until(victim_running, f"a shard running on {victim}", timeout=300, every=0.2))
        stack.kill(victim)
        if killed.get("pid"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(killed["pid"]), signal.SIGKILL)  # the task process, should it have left the group
        print(f"\nkilled {victim} while it ran shard {killed['map_index']} (try {killed['try_number']})")

    # No logical date: the run is a second run for the same day (conf carries the day), as a manual rerun is.
    run_and_wait(stack, metadata, run_id, "--conf", f'{{"date": "{day}"}}', while_running=kill_victim_mid_shard)
    tis, tried = metadata.task_instances(run_id), metadata.task_instances(run_id, "task_instance_history")
    shard = tis[(tis.task_id == "score") & (tis.map_index == killed["map_index"])]
    history = tried[(tried.task_id == "score") & (tried.map_index == killed["map_index"])]
    print(f"shard {killed['map_index']} tries:\n{pd.concat([history, shard]).to_string(index=False)}")
    final = shard.iloc[0]
    assert final.state == "success" and final.try_number > killed["try_number"]
    assert final.hostname == stack.workers[0], "the retry did not run on the surviving worker"
    assert_same_mixes(pg_settings, day, reference)
