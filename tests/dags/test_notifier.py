"""The alert notifier the gate tasks carry (plugins/dailymix_notifiers.py), taken from the parsed DAGs and called as
Airflow calls a failure callback: the alert log always; Slack and e-mail through the providers' real
`SlackWebhookNotifier` / `SmtpNotifier` only when their connections exist. Local servers on 127.0.0.1 stand in for
the Slack webhook and the SMTP relay, configured as `AIRFLOW_CONN_DAILYMIX_SLACK` / `AIRFLOW_CONN_DAILYMIX_SMTP`."""

from __future__ import annotations

import email
import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from pipeline.core.alerts import alert_log_path, raise_alerts
from pipeline.core.config import Settings

DAY = "2026-11-22"
CONTEXT = {"logical_date": pendulum.datetime(2026, 11, 22, tz="UTC"), "run_id": "manual__1"}
RECIPIENTS = ["oncall@example.com", "data@example.com"]
# (DAG, task) of every gate and the alert source its notifier reads
GATES = {("dailymix_nightly", "skew_gate"): "skew_gate", ("dailymix_index", "recall_gate"): "recall_gate",
         ("dailymix_monitor", "drift"): "monitor"}


def _callbacks(task) -> list:
    callbacks = task.on_failure_callback
    return list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks] if callbacks else []


def _alert_notifiers(task) -> list:
    return [callback for callback in _callbacks(task) if type(callback).__name__ == "DailyMixAlertNotifier"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DAILYMIX_HOME", str(tmp_path))  # where the notifier's load_settings() looks
    return Settings(home=tmp_path)


@pytest.fixture
def drift_notifier(dagbag):
    """The notifier on the monitor DAG's drift task, as the DagBag parsed it."""
    (notifier,) = _alert_notifiers(dagbag.dags["dailymix_monitor"].get_task("drift"))
    return notifier


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A stand-in Slack webhook: records each JSON body; answers with `status` (200 unless a test changes it)."""
    state: dict = {"received": [], "status": 200}

    class Webhook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state["received"].append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(state["status"])
            self.end_headers()
            self.wfile.write(b"ok" if state["status"] == 200 else b"invalid_token")

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW_CONN_DAILYMIX_SLACK", json.dumps({
        "conn_type": "slackwebhook", "host": f"http://127.0.0.1:{server.server_port}/services",
        "password": "T000/B000/XXXX"}))
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """A stand-in SMTP relay speaking just enough SMTP for smtplib; records each message it accepts."""
    received: list[dict] = []

    class Relay(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write(f"{line}\r\n".encode())

        def handle(self) -> None:
            self.reply("220 relay ready")
            envelope: dict = {"to": []}
            while line := self.rfile.readline():
                verb, _, argument = line.decode().strip().partition(" ")
                verb = verb.upper()
                if verb == "MAIL":
                    envelope["from"] = argument.split(":", 1)[1].strip("<> ")
                elif verb == "RCPT":
                    envelope["to"].append(argument.split(":", 1)[1].strip("<> "))
                elif verb == "DATA":
                    self.reply("354 end with <CRLF>.<CRLF>")
                    lines = iter(self.rfile.readline, b".\r\n")
                    received.append({**envelope, "message": email.message_from_bytes(b"".join(lines))})
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                self.reply("250 ok" if verb in {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP"}
                           else "502 not implemented")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Relay)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW_CONN_DAILYMIX_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": server.server_address[1],
        "extra": {"to": RECIPIENTS, "from_email": "dailymix@example.com", "disable_ssl": True,
                  "disable_tls": True, "retry_limit": 0, "timeout": 5}}))
    yield received
    server.shutdown()
    server.server_close()


def _log(settings: Settings) -> list[dict]:
    path = alert_log_path(settings)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_gate_carries_the_notifier_for_its_alerts_and_is_not_retried(dagbag) -> None:
    found = {(dag_id, task.task_id): [n.source for n in _alert_notifiers(task)]
             for dag_id, dag in dagbag.dags.items() for task in dag.tasks if _alert_notifiers(task)}
    assert found == {gate: [source] for gate, source in GATES.items()}
    retries = {gate: dagbag.dags[gate[0]].get_task(gate[1]).retries for gate in GATES}
    assert retries == dict.fromkeys(GATES, 0), retries


def test_alerts_go_to_the_log_once_and_to_slack_and_email_when_configured(
        settings: Settings, drift_notifier, slack: dict, smtp: list[dict]) -> None:
    raise_alerts(settings, DAY, "monitor", ["skip_rate 0.400 is 10.0 pp above its baseline 0.300"])
    drift_notifier(dict(CONTEXT))
    drift_notifier(dict(CONTEXT))  # a cleared and rerun task: the log keeps one line
    assert [(r["date"], r["source"], r["run_id"]) for r in _log(settings)] == [(DAY, "monitor", "manual__1")]
    assert len(slack["received"]) == 2
    path, body = slack["received"][0]
    assert path == "/services/T000/B000/XXXX" and "skip_rate 0.400" in body["text"] and DAY in body["text"]
    assert len(smtp) == 2
    mail = smtp[0]
    assert mail["from"] == "dailymix@example.com" and mail["to"] == RECIPIENTS
    assert mail["message"]["Subject"] == f"[dailymix] monitor alert {DAY}"
    html_part = next(part for part in mail["message"].walk() if part.get_content_type() == "text/html")
    assert "skip_rate 0.400 is 10.0 pp above its baseline 0.300" in html_part.get_payload(decode=True).decode()


def test_no_channel_without_its_connection(settings: Settings, drift_notifier,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DAILYMIX_SLACK", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_DAILYMIX_SMTP", raising=False)
    raise_alerts(settings, DAY, "monitor", ["user_genre_entropy 1.2 is 20% below its baseline 1.5"])
    drift_notifier(dict(CONTEXT))  # no Slack, no SMTP: log only, no error
    assert len(_log(settings)) == 1


def test_a_failure_without_alerts_sends_nothing(settings: Settings, drift_notifier, slack: dict,
                                                smtp: list[dict]) -> None:
    raise_alerts(settings, DAY, "monitor", [])
    drift_notifier(dict(CONTEXT))
    assert _log(settings) == [] and slack["received"] == [] and smtp == []


def test_a_refusing_channel_does_not_keep_the_alert_from_the_other(settings: Settings, drift_notifier, slack: dict,
                                                                   smtp: list[dict]) -> None:
    slack["status"] = 403
    raise_alerts(settings, DAY, "monitor", ["skip_rate 0.400 is 10.0 pp above its baseline 0.300"])
    with pytest.raises(RuntimeError, match=r"monitor alert for 2026-11-22 is in .*alerts.log but was not "
                                           r"delivered by Slack: .*403"):
        drift_notifier(dict(CONTEXT))
    assert len(_log(settings)) == 1 and len(slack["received"]) == 1 and len(smtp) == 1
