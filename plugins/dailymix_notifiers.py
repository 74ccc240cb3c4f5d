"""Alert notifier of the Daily Mix checks: the alerts a check stored for the run's day reach the alert log always,
and Slack and e-mail through Airflow's provider notifiers when their connections exist.

`DailyMixAlertNotifier` is the failure callback of the gate tasks (skew gate, recall gate, drift check; see
`gate_task` in `dags/_dailymix.py`). It reads the alerts the check stored for (day, source) with
`pipeline.core.alerts` and sends them to:
  - the alert log `monitoring/alerts/alerts.log` under the data root (one line per distinct incident);
  - Slack, through the Slack provider's `SlackWebhookNotifier`, when the Airflow connection `dailymix_slack`
    exists: a Slack Incoming Webhook connection (`slackwebhook`) whose password is the webhook token
    (`T000/B000/XXX`, or the whole `https://hooks.slack.com/services/...` URL);
  - e-mail, through the SMTP provider's `SmtpNotifier`, when the Airflow connection `dailymix_smtp` exists: an
    SMTP connection whose extra names the recipients and sender, `{"to": ["oncall@example.com"],
    "from_email": "dailymix@example.com"}`.
Connections come from Airflow (UI, secrets backend or `AIRFLOW_CONN_*`), never from code. A failure without
stored alerts (the check never got to judge) sends nothing: Airflow's own failure handling covers it.

Airflow puts its plugins folder on `sys.path`, so DAG files import this module by name. It stays light: Airflow's
SDK at import time; the providers and the domain library only when an alert goes out.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk import BaseNotifier, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

log = logging.getLogger(__name__)
SLACK_CONN_ID = "dailymix_slack"
SMTP_CONN_ID = "dailymix_smtp"


class AlertNotDelivered(RuntimeError):
    """An alert reached the alert log but a configured channel refused it."""


class DailyMixAlertNotifier(BaseNotifier):
    """Send the alerts a check stored for its run's day and `source` to the alert log, Slack and e-mail.

    `day_of_run` finds the run's day in the callback's context (the DAGs pass theirs, which also knows
    asset-triggered runs).
    """

    template_fields = ("source",)

    def __init__(self, source: str, day_of_run: Callable[[Mapping[str, Any]], str],
                 slack_conn_id: str = SLACK_CONN_ID, smtp_conn_id: str = SMTP_CONN_ID) -> None:
        super().__init__()
        self.source = source
        self.day_of_run = day_of_run
        self.slack_conn_id = slack_conn_id
        self.smtp_conn_id = smtp_conn_id

    def notify(self, context: Mapping[str, Any]) -> None:
        from pipeline.core.alerts import alert_text, log_alert, read_alerts
        from pipeline.core.config import load_settings

        settings, day = load_settings(), self.day_of_run(context)
        alerts = read_alerts(settings, day, self.source)
        if not alerts:
            return
        path = log_alert(settings, day, self.source, alerts, run_id=str(context.get("run_id", "")))
        log.warning("%d %s alert(s) for %s written to %s", len(alerts), self.source, day, path)
        text, refused = alert_text(day, self.source, alerts), []
        for name, channel_for in (("Slack", self.slack), ("e-mail", self.email)):
            try:
                if (channel := channel_for(day, text)) is not None:
                    channel.notify(context)
            except Exception as error:  # one channel down must not keep the alert from the other
                refused.append(f"{name}: {error}")
        if refused:
            raise AlertNotDelivered(f"{self.source} alert for {day} is in {path} but was not delivered by "
                                    + "; ".join(refused))

    def slack(self, day: str, text: str) -> BaseNotifier | None:
        """The Slack provider's webhook notifier carrying `text`, if the Slack connection exists."""
        if connection(self.slack_conn_id) is None:
            return None
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        return SlackWebhookNotifier(slack_webhook_conn_id=self.slack_conn_id, text=text)

    def email(self, day: str, text: str) -> BaseNotifier | None:
        """The SMTP provider's notifier carrying `text` to the connection's recipients, if the connection exists."""
        if (smtp := connection(self.smtp_conn_id)) is None:
            return None
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        recipients = smtp.extra_dejson.get("to")
        if not recipients:
            raise ValueError(f'connection {self.smtp_conn_id} names no recipients: add {{"to": [...]}} to its extra')
        return SmtpNotifier(to=recipients, smtp_conn_id=self.smtp_conn_id,
                            subject=f"[dailymix] {self.source} alert {day}",
                            html_content=f"<pre>{html.escape(text)}</pre>")


def connection(conn_id: str) -> Connection | None:
    """The Airflow connection, or None when it is not configured (its channel is then off)."""
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
