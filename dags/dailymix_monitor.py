"""
### Daily Mix — monitor the loop (after each publication)

The steps are the monitor flow (`pipeline.monitor.health.FLOW`), the same the closed-loop simulation runs (with
a week's health row in place of the day's, and without MLflow).

| step | what it does | output |
|---|---|---|
| `metrics` | the day's health row: genre entropy (global, per mix, per user), discovery and exploration share, coverage, exposure Gini, skip rate (overall, exploit, explore, discoveries vs familiar tracks) | `monitoring/metrics/date=D.json` |
| `to_mlflow` | logs the row to the MLflow experiment `dailymix-monitor` (one run per day, step = day) so each metric charts as a time series | MLflow run `monitor-D` |
| `drift` | compares the day with its trailing baseline, the median of the same weekday's values in the previous 4 weeks (`monitor.baseline_weeks`), and the entropies also with a long-horizon one, 5–8 weeks back (`monitor.long_baseline_weeks`; a slow narrowing drags the trailing median down with it): global or per-user genre entropy more than 10% below either (`monitor.entropy_drop`) or the skip rate more than 3 points above the trailing one (`monitor.skip_rise`) **fails this task** and fires the notifier | `monitoring/alerts/date=D/monitor.json` |

**Alerts.** A failed `drift` task is the flag in the UI. Like the other checks (`dailymix_nightly`'s skew gate,
`dailymix_index`'s recall gate) it is not retried, and its `on_failure_callback` (`DailyMixAlertNotifier`,
`plugins/dailymix_notifiers.py`) appends the alerts to `monitoring/alerts/alerts.log` and, through the providers'
`SlackWebhookNotifier` / `SmtpNotifier`, posts them to Slack and/or e-mails them when the Airflow connections
`dailymix_slack` (Slack incoming webhook, token as password) / `dailymix_smtp` (SMTP, extra
`{"to": [...], "from_email": ...}`) exist.

**Inputs**: asset `dailymix_mixes` (the night's publication; triggers this DAG), the day's raw events. **Outputs**: `monitoring/metrics/date=D.json`, `monitoring/alerts/date=D/monitor.json`; the trends and alerts are charted in the Airflow UI under **Daily Mix**.

**Runbook.** *An alert fired*: a falling genre entropy with a steady skip rate is the feedback loop narrowing:
raise `rerank.exploration_rate` (see `dailymix tune-exploration`) and check the ranker trains with IPS
(`training.use_ips`); a rising skip rate after a promotion: roll the `champion` alias back to the previous
version (see `dailymix_retrain`). Clearing the failed task re-checks the same day (idempotent).
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, MIXES, START_DATE, gate_task, run_day, run_step
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
    def metrics() -> str:
        from pipeline.monitor.health import FLOW

        return run_step(FLOW)

    @task
    def to_mlflow(metrics: str) -> str:
        from pipeline.monitor.health import FLOW

        return run_step(FLOW, metrics=metrics)

    @gate_task("monitor")
    def drift(metrics: str) -> list[str]:
        from pipeline.monitor.health import FLOW

        alerts = run_step(FLOW, metrics=metrics)
        if alerts:  # the notifier sends the alerts
            raise AirflowFailException(f"{len(alerts)} drift alert(s) for {run_day()}: " + " | ".join(alerts))
        return alerts

    recorded = metrics()
    to_mlflow(recorded)
    drift(recorded)


dailymix_monitor()
