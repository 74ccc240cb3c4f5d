"""The one-command demo: a fresh world, every DAG run through Airflow in order, a summary.

DAGs run with `airflow dags test` against this data root's own Airflow home (SQLite), exactly
as CI and a developer would run them; the runs then show in the Airflow UI (`make up`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import PROJECT_ROOT, load_settings, save_settings

DAG_ORDER = ("dailymix_retrain", "dailymix_index", "dailymix_nightly", "dailymix_monitor")


def airflow_env(home: Path) -> dict[str, str]:
    """Environment for Airflow commands on this data root: its own metadata DB, the project's DAGs."""
    env = dict(os.environ)
    env.update({
        "DAILYMIX_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "MLFLOW_TRACKING_URI": load_settings(home).tracking_uri,
        "GE_USAGE_STATS": "False",
        "FEAST_USAGE": "False",
        "PYTHONWARNINGS": "ignore",
        # Airflow's own subprocesses (standalone's components, task runners) call `airflow` by name.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    })
    return env


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


class DagRunFailed(RuntimeError):
    pass


def airflow_db_migrate(home: Path) -> None:
    log = home / "airflow" / "logs" / "db-migrate.log"
    _run([_airflow(), "db", "migrate"], airflow_env(home), log)


def run_dag(home: Path, dag_id: str, day: str) -> float:
    """`airflow dags test DAG DAY`; returns seconds; raises with the log's tail on failure."""
    log = home / "airflow" / "logs" / "dags-test" / f"{dag_id}-{day}.log"
    started = time.perf_counter()
    _run([_airflow(), "dags", "test", dag_id, day], airflow_env(home), log)
    text = log.read_text(errors="replace")
    states = re.findall(r"DagRun Finished: .*?\bstate=(\w+)", text)
    if states[-1:] != ["success"]:  # `dags test` exits 0 even when the run failed
        raise DagRunFailed(f"{dag_id} {day} ended {states[-1] if states else 'without a result'}; see {log}\n"
                           f"{_failure_excerpt(text)}")
    return time.perf_counter() - started


def _run(command: list[str], env: dict[str, str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT).returncode
    if code != 0:
        tail = _tail(log.read_text(errors="replace"))
        raise DagRunFailed(f"{' '.join(command[1:])} exited {code}; see {log}\n{tail}")


def _failure_excerpt(text: str) -> str:
    """The exception lines of a failed run (with what follows them), else its tail."""
    lines = text.splitlines()
    errors = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return "\n".join(lines[errors[0]:errors[0] + 20]) if errors else _tail(text)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_loop(home: Path, progress=print) -> dict[str, float]:
    """Features for every landed day, then retrain → index → nightly → monitor on the last day."""
    from pipeline.world import history_days

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
    from pipeline.io import read_json
    from pipeline.monitor import metrics_path
    from pipeline.publish import read_publication

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
    from pipeline.cli import main as cli

    if fresh and home.exists():
        shutil.rmtree(home)
    started = time.perf_counter()
    settings = load_settings(home)
    save_settings(settings)
    cli(["--home", str(home), "world"])
    timings = {"world": time.perf_counter() - started}
    print("running the DAGs through Airflow (logs: airflow/logs/dags-test/):")
    timings |= run_loop(home)
    timings["total"] = time.perf_counter() - started
    print(summary(home, timings))
    return 0
