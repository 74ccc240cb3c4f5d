"""The one-command demo: a fresh world, every DAG run through Airflow in order, a summary.

DAGs run with `airflow dags test` against this data root's own Airflow home (SQLite), exactly
as CI and a developer would run them; the runs then show in the Airflow UI (`make up`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.core.config import load_settings, save_settings
from pipeline.ops.airflow_env import airflow_db_migrate, run_dag

DAG_ORDER = ("dailymix_retrain", "dailymix_index", "dailymix_nightly", "dailymix_monitor")


def run_loop(home: Path, progress=print) -> dict[str, float]:
    """Features for every landed day, then retrain → index → nightly → monitor on the last day."""
    from pipeline.sim.world import history_days

    settings = load_settings(home)
    days = history_days(settings.world)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    airflow_db_migrate(home)
    timings["airflow db migrate"] = time.perf_counter() - started
    feature_seconds = 0.0
    for day in days:
        feature_seconds += run_dag(home, "dailymix_features", day)
        progress(f"  dailymix_features {day}  ok")
    timings[f"dailymix_features ×{len(days)}"] = feature_seconds
    for dag_id in DAG_ORDER:
        timings[dag_id] = run_dag(home, dag_id, days[-1])
        progress(f"  {dag_id} {days[-1]}  ok ({timings[dag_id]:.0f} s)")
    return timings


def summary(home: Path, timings: dict[str, float]) -> str:
    from pipeline.core.io import read_json
    from pipeline.monitor.health import metrics_path
    from pipeline.publish.files import read_publication

    settings = load_settings(home)
    manifest, _ = read_publication(settings)
    metrics = read_json(metrics_path(settings, manifest["date"]))
    lineage = manifest["lineage"]
    lines = [
        "",
        f"Daily Mix demo — published {manifest['date']} in {home}",
        f"  users with mixes      {metrics['users']}",
        f"  mixes                 {metrics['mixes']}  ({metrics['mixes_per_user']:.2f} per user)",
        f"  tracks per mix        {metrics['tracks_per_mix']:.1f}",
        f"  discovery share       {metrics['discovery_share']:.3f}",
        f"  exploration share     {metrics['explore_share']:.3f}",
        f"  genre entropy (bits)  {metrics['mean_mix_genre_entropy']:.3f} per mix, "
        f"{metrics['user_genre_entropy']:.3f} per user, {metrics['global_genre_entropy']:.3f} overall",
        f"  catalog coverage      {metrics['coverage']:.3f}",
        f"  lineage               model v{lineage['model_version']}, index {lineage['index_version']}, "
        f"features {lineage['feature_version']}",
        "  time per stage (s)",
        *[f"    {name:<28} {seconds:7.1f}" for name, seconds in timings.items()],
        "",
        "Look around:",
        "  .venv/bin/dailymix mixes 0                 # a user's mixes (add --json for the API contract)",
        "  make up                                     # Airflow UI http://localhost:8080, MLflow UI http://localhost:5000",
    ]
    return "\n".join(lines)


def run_demo(home: Path, fresh: bool = True) -> int:
    from pipeline.sim.world import create_world, world_summary

    if fresh and home.exists():
        shutil.rmtree(home)
    started = time.perf_counter()
    settings = load_settings(home)
    save_settings(settings)
    settings, world = create_world(settings)
    print(world_summary(settings, world))
    timings = {"world": time.perf_counter() - started}
    print("running the DAGs through Airflow (logs: airflow/logs/dags-test/):")
    timings |= run_loop(home)
    timings["total"] = time.perf_counter() - started
    print(summary(home, timings))
    return 0
