"""
### Daily Mix — monitor the loop (after each publication)

| step | what it does | output |
|---|---|---|
| `metrics` | the day's health row: genre entropy (global, per mix, per user), discovery and exploration share, coverage, exposure Gini, skip rate (overall, exploit, explore, discoveries vs familiar tracks) | `monitoring/metrics/date=D.json` |
| `to_mlflow` | logs the row to the MLflow experiment `dailymix-monitor` (one run per day, step = day) so each metric charts as a time series | MLflow run `monitor-D` |
| `drift` | compares the day with its trailing baseline, the median of the same weekday's values in the previous 4 weeks (`monitor.baseline_weeks`), and the entropies also with a long-horizon one, 5–8 weeks back (`monitor.long_baseline_weeks`; a slow narrowing drags the trailing median down with it): global or per-user genre entropy more than 10% below either (`monitor.entropy_drop`) or the skip rate more than 3 points above the trailing one (`monitor.skip_rise`) **fails this task** and fires the notifier | `monitoring/alerts/date=D/monitor.json` |

**Alerts.** A failed `drift` task is the flag in the UI; its `on_failure_callback` (`DailyMixAlertNotifier`)
appends the alerts to `monitoring/alerts/alerts.log`, and posts them to Slack and/or e-mail when the Airflow
connections `dailymix_slack` (incoming webhook) / `dailymix_smtp` (SMTP, extra `{"to": [...]}`) exist.

**Inputs**: asset `dailymix_mixes` (the night's publication; triggers this DAG), the day's raw events. **Outputs**: `monitoring/metrics/date=D.json`, `monitoring/alerts/date=D/monitor.json`; the trends and alerts are charted in the Airflow UI under **Daily Mix**.

**Runbook.** *An alert fired*: a falling genre entropy with a steady skip rate is the feedback loop narrowing:
raise `rerank.exploration_rate` (see `dailymix tune-exploration`) and check the ranker trains with IPS
(`training.use_ips`); a rising skip rate after a promotion: roll the `champion` alias back to the previous
version (see `dailymix_retrain`). Clearing the failed task re-checks the same day (idempotent).
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, MIXES, START_DATE, run_day, settings
from _notifiers import DailyMixAlertNotifier
from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException


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
        from pipeline.core.paths import Layout
        from pipeline.monitor.health import record_day
        from pipeline.sim.world import read_world

        config, day = settings(), run_day()
        path = record_day(config, day, len(read_world(Layout(config.home)).catalog))
        return {"date": day, "metrics_path": path}

    @task
    def to_mlflow(recorded: dict) -> str:
        from pipeline.monitor.health import log_metrics_to_mlflow

        return log_metrics_to_mlflow(settings(), recorded["date"])

    @task(on_failure_callback=DailyMixAlertNotifier(source="monitor"))
    def drift(recorded: dict) -> list[str]:
        from pipeline.monitor.health import check_drift

        alerts = check_drift(settings(), recorded["date"])
        if alerts:  # no retry: the data will not change; the notifier sends the alerts
            raise AirflowFailException(f"{len(alerts)} drift alert(s) for {recorded['date']}: " + " | ".join(alerts))
        return alerts

    recorded = metrics()
    to_mlflow(recorded)
    drift(recorded)


dailymix_monitor()
