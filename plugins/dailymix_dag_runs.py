"""Several DAG runs one after another in one process, each exactly as `airflow dags test DAG DAY` runs it.

`airflow dags test` is one process per run: it starts Airflow, parses the DAGs and imports the task libraries
(pandas, MLflow, Feast, Great Expectations) every time. A sequence of runs (the demo, the end-to-end tests' tiny
world) pays that once here. Each run is still `DAG.test()` on the parsed DAG against the metadata database, so it
shows in the Airflow UI like any other run.

    python plugins/dailymix_dag_runs.py '[{"dag_id": "dailymix_features", "day": "2026-10-31", "conf": {...}}, ...]'

Migrates the metadata database first (as `airflow db migrate`). After each run it prints one result line
(`pipeline.ops.airflow_env.RESULT_PREFIX` and the run's dag_id, day, state, wall and CPU seconds) and stops with
exit code 1 at the first run that does not succeed. `pipeline.ops.airflow_env.run_dags` starts it with the data
root's Airflow environment and reads those lines.
"""

from __future__ import annotations

import json
import sys
import time


def migrate() -> None:
    from airflow.utils import db

    db.upgradedb()


def run(dag_id: str, day: str, conf: dict | None) -> str:
    """One `dags test` run: the DAG parsed from its bundle (and synced to the database), then `DAG.test()`."""
    import pendulum
    from airflow.utils.cli import get_bagged_dag

    dag = get_bagged_dag(bundle_names=None, dag_id=dag_id)
    return str(dag.test(logical_date=pendulum.parse(day), run_conf=conf).state)


def main(runs: list[dict]) -> int:
    from airflow.providers_manager import ProvidersManager

    from pipeline.ops.airflow_env import RESULT_PREFIX, cpu_seconds

    ProvidersManager().initialize_providers_configuration()  # as every `airflow` command does first
    migrate()
    for spec in runs:
        started, cpu = time.perf_counter(), cpu_seconds()
        state = run(spec["dag_id"], spec["day"], spec.get("conf"))
        print(f"{RESULT_PREFIX} {spec['dag_id']} {spec['day']} {state} {time.perf_counter() - started:.2f} "
              f"{cpu_seconds() - cpu:.2f}", flush=True)
        if state != "success":
            return 1
    return 0


if __name__ == "__main__":
    from pipeline.core.process import exit_now

    exit_now(main(json.loads(sys.argv[1])))
