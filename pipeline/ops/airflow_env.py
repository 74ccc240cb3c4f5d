"""The Airflow environment of a data root: its own metadata DB and logs, the project's DAGs and plugins, and
`airflow dags test` runs whose failures come back as exceptions with the log's relevant lines.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import PROJECT_ROOT, load_settings


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


def airflow_executable() -> str:
    return str(Path(sys.executable).with_name("airflow"))


class DagRunFailed(RuntimeError):
    pass


# The result line `plugins/dailymix_dag_runs.py` prints after each run.
RESULT_PREFIX = "DAILYMIX-RUN"
DAG_RUNNER = PROJECT_ROOT / "plugins" / "dailymix_dag_runs.py"


@dataclass(frozen=True)
class DagRun:
    """One `dags test` run: a DAG, the day it runs for, and its conf (which sets DAG params)."""

    dag_id: str
    day: str
    conf: dict | None = None


@dataclass(frozen=True)
class DagRunResult:
    """How a run ended: its state, and the wall and CPU seconds it took."""

    run: DagRun
    state: str
    wall: float
    cpu: float


def airflow_db_migrate(home: Path) -> None:
    log = home / "airflow" / "logs" / "db-migrate.log"
    _run([airflow_executable(), "db", "migrate"], airflow_env(home), log)


def run_dag(home: Path, dag_id: str, day: str, conf: dict | None = None) -> float:
    """`airflow dags test DAG DAY` (with `conf` as the run's conf, which sets DAG params); returns seconds; raises
    with the log's relevant lines on failure."""
    log = home / "airflow" / "logs" / "dags-test" / f"{dag_id}-{day}.log"
    started = time.perf_counter()
    command = [airflow_executable(), "dags", "test", dag_id, day, *(["--conf", json.dumps(conf)] if conf else [])]
    _run(command, airflow_env(home), log)
    text = log.read_text(errors="replace")
    states = re.findall(r"DagRun Finished: .*?\bstate=(\w+)", text)
    if states[-1:] != ["success"]:  # `dags test` exits 0 even when the run failed
        raise DagRunFailed(f"{dag_id} {day} ended {states[-1] if states else 'without a result'}; see {log}\n"
                           f"{_failure_excerpt(text)}")
    return time.perf_counter() - started


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_dags(home: Path, runs: Sequence[DagRun],
             on_result: Callable[[DagRunResult], None] = lambda _: None) -> list[DagRunResult]:
    """The runs in order in one Airflow process, each as `airflow dags test` runs it (`plugins/dailymix_dag_runs.py`):
    the metadata database is migrated first, Airflow's start-up and the task libraries' imports are paid once.

    `on_result` hears of each run as it ends. Raises `DagRunFailed` naming the first run that did not succeed, with
    the log's relevant lines; the runs after it are not started.
    """
    log = home / "airflow" / "logs" / "dags-test" / f"runs-{runs[0].day}..{runs[-1].day}-{len(runs)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps([{"dag_id": r.dag_id, "day": r.day, "conf": r.conf} for r in runs])
    results: list[DagRunResult] = []
    with log.open("w") as out, subprocess.Popen(
            [sys.executable, str(DAG_RUNNER), payload], env=airflow_env(home), cwd=PROJECT_ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as runner:
        for line in runner.stdout:
            out.write(line)
            if line.startswith(RESULT_PREFIX):
                results.append(_result(line, runs[len(results)]))
                on_result(results[-1])
    failed = next((r for r in results if r.state != "success"), None)
    if runner.returncode != 0 or failed is not None or len(results) != len(runs):
        what = (f"{failed.run.dag_id} {failed.run.day} ended {failed.state}" if failed else
                f"the DAG runner exited {runner.returncode} after {len(results)} of {len(runs)} runs")
        raise DagRunFailed(f"{what}; see {log}\n{_failure_excerpt(_last_run_lines(log, ended=failed is not None))}")
    return results


def _last_run_lines(log: Path, ended: bool) -> str:
    """The log lines of the last run started: before its result line when it `ended`, else after the last one."""
    pieces = log.read_text(errors="replace").split(f"\n{RESULT_PREFIX} ")
    return pieces[-2] if ended and len(pieces) > 1 else pieces[-1]


def _result(line: str, run: DagRun) -> DagRunResult:
    _, dag_id, day, state, wall, cpu = line.split()
    if (dag_id, day) != (run.dag_id, run.day):
        raise DagRunFailed(f"the DAG runner reported {dag_id} {day} where {run.dag_id} {run.day} was expected")
    return DagRunResult(run, state, float(wall), float(cpu))


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
