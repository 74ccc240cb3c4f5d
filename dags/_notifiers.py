"""Airflow notifiers of the Daily Mix DAGs: drift and gate alerts out of Airflow.

`DailyMixAlertNotifier` is a task `on_failure_callback`. It reads the alerts the task stored (pipeline.monitor.health)
and sends them to:
  - the alert log `monitoring/alerts/alerts.log` under the data root (always);
  - Slack, when the Airflow connection `dailymix_slack` exists (an incoming-webhook URL as its host, or the
    `https://hooks.slack.com/services/...` path as its password);
  - e-mail, when the Airflow connection `dailymix_smtp` exists (an SMTP connection whose extra holds
    `{"to": ["oncall@example.com"], "from_email": "dailymix@example.com"}`).
Connections come from Airflow (UI, secrets backend or `AIRFLOW_CONN_*`), never from code.
"""

from __future__ import annotations

import json
import logging
import urllib.request

from _dailymix import run_day, settings
from airflow.sdk import BaseNotifier, Connection

log = logging.getLogger(__name__)
SLACK_CONN_ID = "dailymix_slack"
SMTP_CONN_ID = "dailymix_smtp"


class DailyMixAlertNotifier(BaseNotifier):
    """Send the alerts a task stored for its day and `source` to the alert log, Slack and e-mail."""

    template_fields = ("source",)

    def __init__(self, source: str, slack_conn_id: str = SLACK_CONN_ID, smtp_conn_id: str = SMTP_CONN_ID) -> None:
        super().__init__()
        self.source = source
        self.slack_conn_id = slack_conn_id
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context) -> None:
        from pipeline.core.alerts import alert_text, log_alert, read_alerts

        config, day = settings(), run_day(context)
        alerts = read_alerts(config, day, self.source)
        if not alerts:  # the task failed for another reason: Airflow's own failure handling covers it
            return
        path = log_alert(config, day, self.source, alerts, run_id=str(context.get("run_id", "")))
        log.warning("%d %s alert(s) for %s written to %s", len(alerts), self.source, day, path)
        text = alert_text(day, self.source, alerts)
        if (slack := _connection(self.slack_conn_id)) is not None:
            _post_slack(slack, text)
        if (smtp := _connection(self.smtp_conn_id)) is not None:
            _send_email(smtp, self.smtp_conn_id, f"[dailymix] {self.source} alert {day}", text)


def _connection(conn_id: str):
    """The connection, or None when it is not configured (the channel is then off)."""
    try:
        return Connection.get(conn_id)
    except Exception:  # AirflowNotFoundException, or a runtime error naming the missing connection
        return None


def _post_slack(conn, text: str) -> None:
    url = conn.host if (conn.host or "").startswith("http") else f"https://hooks.slack.com/services/{conn.password}"
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # URL from an Airflow connection
        response.read()


def _send_email(conn, conn_id: str, subject: str, text: str) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    extra = conn.extra_dejson
    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=extra["to"], from_email=extra.get("from_email"), subject=subject,
                             html_content=f"<pre>{text}</pre>")
