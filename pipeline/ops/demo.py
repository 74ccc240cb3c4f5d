"""The one-command demo: a fresh world, every DAG run through Airflow in order, a summary.

DAGs run with `airflow dags test` against this data root's own Airflow home (SQLite), exactly
as CI and a developer would run them; the runs then show in the Airflow UI (`make up`). The landed
history goes through one features run (its param `from_date`), not one run per day.
"""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import load_settings, save_settings
from pipeline.ops.airflow_env import airflow_db_migrate, run_dag

DAG_ORDER = ("dailymix_retrain", "dailymix_index", "dailymix_nightly", "dailymix_monitor")


@dataclass(frozen=True)
class StageTime:
    """How long a stage took: wall seconds, and CPU seconds (user + system) of the processes doing the work, about
    what the stage takes on an idle machine when those processes run on one core."""

    wall: float
    cpu: float


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (the Airflow commands)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(action: Callable[[], object]) -> StageTime:
    cpu, wall = _cpu_seconds(), time.perf_counter()
    action()
    return StageTime(time.perf_counter() - wall, _cpu_seconds() - cpu)


def run_loop(home: Path, progress=print) -> dict[str, StageTime]:
    """Features for every landed day in one run (the param `from_date`), then retrain → index → nightly → monitor
    on the last day."""
    from pipeline.sim.world import history_days

    settings = load_settings(home)
    days = history_days(settings.world)
    cpu, wall = _cpu_seconds(), time.perf_counter()
    timings = {"airflow db migrate": timed(lambda: airflow_db_migrate(home))}
    name = f"dailymix_features ({len(days)} days)"
    timings[name] = timed(lambda: run_dag(home, "dailymix_features", days[-1], conf={"from_date": days[0]}))
    progress(f"  dailymix_features {days[0]} … {days[-1]}  ok ({timings[name].wall:.0f} s)")
    for dag_id in DAG_ORDER:
        timings[dag_id] = timed(lambda dag_id=dag_id: run_dag(home, dag_id, days[-1]))
        progress(f"  {dag_id} {days[-1]}  ok ({timings[dag_id].wall:.0f} s)")
    timings["airflow, all runs"] = StageTime(time.perf_counter() - wall, _cpu_seconds() - cpu)
    return timings


def summary(home: Path, timings: dict[str, StageTime]) -> str:
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
        f"  time per stage (s)             {'wall':>7} {'cpu':>7}",
        *[f"    {name:<28} {time_taken.wall:7.1f} {time_taken.cpu:7.1f}" for name, time_taken in timings.items()],
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
    cpu, wall = _cpu_seconds(), time.perf_counter()
    settings = load_settings(home)
    save_settings(settings)
    settings, world = create_world(settings)
    print(world_summary(settings, world))
    timings = {"world": StageTime(time.perf_counter() - wall, _cpu_seconds() - cpu)}
    print("running the DAGs through Airflow (logs: airflow/logs/dags-test/):")
    timings |= run_loop(home)
    timings["total"] = StageTime(time.perf_counter() - wall, _cpu_seconds() - cpu)
    print(summary(home, timings))
    return 0
