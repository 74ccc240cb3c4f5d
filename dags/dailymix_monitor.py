"""
### Daily Mix — monitor the loop (after each publication)

| step | what it does | output |
|---|---|---|
| `metrics` | the day's health row: genre entropy (global, per mix, per user), discovery and exploration share, coverage, skip rate (overall, exploit, explore) | `monitoring/metrics/date=D.json` |
| `drift` | compares the day with its trailing 7-day mean; entropy falling >10% or skip rate rising >5 points raises an alert | `monitoring/alerts/date=D/monitor.json`, warnings in this log |

**Inputs**: asset `dailymix_mixes` (the night's publication; triggers this DAG), the day's raw events. **Outputs**: `monitoring/metrics/date=D.json`, `monitoring/alerts/date=D/monitor.json`; the trends and alerts are charted in the Airflow UI under **Daily Mix**.

**Runbook.** *An alert fired*: a falling genre entropy with a steady skip rate is the feedback loop narrowing:
raise `rerank.exploration_rate` and retrain with IPS; a rising skip rate after a promotion: roll the
`champion` alias back to the previous version (see `dailymix_retrain`).
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, MIXES, START_DATE, run_day, settings
from airflow.sdk import dag, task


@dag(
    dag_id="dailymix_monitor",
    schedule=[MIXES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dailymix", "monitoring"],
    doc_md=__doc__,
)
def dailymix_monitor():
    @task
    def metrics() -> dict:
        from pipeline.monitor import record_day
        from pipeline.paths import Layout
        from pipeline.world import read_world

        config, day = settings(), run_day()
        path = record_day(config, day, len(read_world(Layout(config.home)).catalog))
        return {"date": day, "metrics_path": path}

    @task
    def drift(recorded: dict) -> list[str]:
        from pipeline.monitor import check_drift

        return check_drift(settings(), recorded["date"])

    drift(metrics())


dailymix_monitor()
