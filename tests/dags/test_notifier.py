"""DailyMixAlertNotifier: the alert log always; Slack only when its Airflow connection exists (here a local
HTTP server standing in for the webhook, configured as `AIRFLOW_CONN_DAILYMIX_SLACK`)."""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from pipeline.core.alerts import alert_log_path, raise_alerts
from pipeline.core.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
import _notifiers  # a DAG-folder module: importable once dags/ is on the path, as in Airflow

DAY = "2026-11-22"
CONTEXT = {"logical_date": pendulum.datetime(2026, 11, 22, tz="UTC"), "run_id": "manual__1"}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    config = Settings(home=tmp_path)
    monkeypatch.setattr(_notifiers, "settings", lambda: config)
    return config


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW_CONN_DAILYMIX_SLACK", json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{server.server_port}/services/T/B/X"}))
    yield received
    server.shutdown()


def _log(settings: Settings) -> list[dict]:
    path = alert_log_path(settings)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_alerts_go_to_the_log_once_and_to_slack_when_configured(settings: Settings, webhook: list[dict]) -> None:
    raise_alerts(settings, DAY, "monitor", ["skip_rate 0.400 is 10.0 pp above its baseline 0.300"])
    notifier = _notifiers.DailyMixAlertNotifier(source="monitor")
    notifier.notify(CONTEXT)
    notifier.notify(CONTEXT)  # a cleared and rerun task: the log keeps one line
    assert [(r["date"], r["source"], r["run_id"]) for r in _log(settings)] == [(DAY, "monitor", "manual__1")]
    assert len(webhook) == 2 and "skip_rate 0.400" in webhook[0]["text"] and DAY in webhook[0]["text"]


def test_no_channel_without_its_connection(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_DAILYMIX_SLACK", raising=False)
    raise_alerts(settings, DAY, "monitor", ["user_genre_entropy 1.2 is 20% below its baseline 1.5"])
    _notifiers.DailyMixAlertNotifier(source="monitor").notify(CONTEXT)  # no Slack, no SMTP: log only, no error
    assert len(_log(settings)) == 1


def test_a_failure_without_alerts_sends_nothing(settings: Settings, webhook: list[dict]) -> None:
    raise_alerts(settings, DAY, "monitor", [])
    _notifiers.DailyMixAlertNotifier(source="monitor").notify(CONTEXT)
    assert _log(settings) == [] and webhook == []
