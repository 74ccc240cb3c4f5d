"""The one-command demo: a fresh world, every DAG run through Airflow in order, a summary.

DAGs run as `airflow dags test` runs them, against this data root's own Airflow home (SQLite), all in one Airflow
process (`run_dags`); the runs then show in the Airflow UI (`make up`). The landed history goes through one
features run (its param `from_date`), not one run per day.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import load_settings, save_settings
from pipeline.ops.airflow_env import DagRun, DagRunResult, cpu_seconds, run_dags

DAG_ORDER = ("dailymix_retrain", "dailymix_index", "dailymix_nightly", "dailymix_monitor")


@dataclass(frozen=True)
class StageTime:
    """How long a stage took: wall seconds, and CPU seconds (user + system) of the processes doing the work, about
    what the stage takes on an idle machine when those processes run on one core."""

    wall: float
    cpu: float


def timed(action: Callable[[], object]) -> StageTime:
    cpu, wall = cpu_seconds(), time.perf_counter()
    action()
    return StageTime(time.perf_counter() - wall, cpu_seconds() - cpu)


def loop_runs(home: Path) -> list[DagRun]:
    """Features for every landed day in one run (the param `from_date`), then retrain → index → nightly → monitor
    on the last day."""
    from pipeline.sim.world import history_days

    days = history_days(load_settings(home).world)
    return [DagRun("dailymix_features", days[-1], {"from_date": days[0]}),
            *(DagRun(dag_id, days[-1]) for dag_id in DAG_ORDER)]


def run_loop(home: Path, runs: list[DagRun] | None = None, progress=print) -> dict[str, StageTime]:
    """`runs` (by default `loop_runs`) through Airflow in one process; the time of each run, of Airflow's start-up
    with the metadata database's migration, and of all of it."""
    runs = runs if runs is not None else loop_runs(home)
    timings: dict[str, StageTime] = {}

    def heard(result: DagRunResult) -> None:
        run = result.run
        covered = f"{run.conf['from_date']} … {run.day}" if run.conf and "from_date" in run.conf else run.day
        progress(f"  {run.dag_id} {covered}  ok ({result.wall:.0f} s)")
        timings[f"{run.dag_id} {covered}"] = StageTime(result.wall, result.cpu)

    everything = timed(lambda: run_dags(home, runs, on_result=heard))
    runs_total = StageTime(sum(t.wall for t in timings.values()), sum(t.cpu for t in timings.values()))
    return {"airflow start-up, db migrate": StageTime(everything.wall - runs_total.wall,
                                                      everything.cpu - runs_total.cpu),
            **timings, "airflow, all runs": everything}


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
        f"  time per stage (s)                             {'wall':>7} {'cpu':>7}",
        *[f"    {name:<44} {time_taken.wall:7.1f} {time_taken.cpu:7.1f}" for name, time_taken in timings.items()],
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
    cpu, wall = cpu_seconds(), time.perf_counter()
    settings = load_settings(home)
    save_settings(settings)
    settings, world = create_world(settings)
    print(world_summary(settings, world))
    timings = {"world": StageTime(time.perf_counter() - wall, cpu_seconds() - cpu)}
    print("running the DAGs through Airflow (logs: airflow/logs/dags-test/):")
    timings |= run_loop(home)
    timings["total"] = StageTime(time.perf_counter() - wall, cpu_seconds() - cpu)
    print(summary(home, timings))
    return 0
