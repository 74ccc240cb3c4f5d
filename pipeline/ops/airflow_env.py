"""The Airflow environment of a data root: its own metadata DB and logs, the project's DAGs and plugins, and
`airflow dags test` runs whose failures come back as exceptions with the log's relevant lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
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
