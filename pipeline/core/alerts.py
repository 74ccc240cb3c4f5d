"""Alerts: one path for every check that finds something wrong (drift, skew, recall).

Each (day, source) has one alert file the UI reads and each distinct incident one line in the alert log the
notifiers write by default; reruns overwrite the file and never log the same incident twice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_json, read_json
from pipeline.core.paths import Layout

log = logging.getLogger(__name__)


def raise_alerts(settings: Settings, day: str, source: str, alerts: list[str]) -> None:
    """The one alert path: a file per (day, source) for the UI and a warning in the task log."""
    path = alerts_path(settings, day, source)
    atomic_write_json({"date": day, "source": source, "alerts": alerts}, path)
    for alert in alerts:
        log.warning("ALERT [%s] %s: %s", source, day, alert)


def alerts_path(settings: Settings, day: str, source: str) -> Path:
    return Layout(settings.home).monitoring / "alerts" / f"date={day}" / f"{source}.json"


def read_alerts(settings: Settings, day: str, source: str) -> list[str]:
    """The alerts raise_alerts stored for (day, source); none if the check has not run."""
    path = alerts_path(settings, day, source)
    return list(read_json(path)["alerts"]) if path.exists() else []


def alert_log_path(settings: Settings) -> Path:
    return Layout(settings.home).monitoring / "alerts" / "alerts.log"


def log_alert(settings: Settings, day: str, source: str, alerts: list[str], run_id: str = "") -> Path:
    """Append one JSON line per (day, source, alerts) to the alert log the notifier writes by default.

    A rerun that raises the same alerts again is not logged twice, so the log reads as a list of distinct
    incidents.
    """
    path = alert_log_path(settings)
    line = json.dumps({"date": day, "source": source, "alerts": alerts, "run_id": run_id}, sort_keys=True)
    seen = path.read_text().splitlines() if path.exists() else []
    key = (day, source, tuple(alerts))
    if any((r["date"], r["source"], tuple(r["alerts"])) == key for r in map(json.loads, seen)):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(line + "\n")
    return path


def alert_text(day: str, source: str, alerts: list[str]) -> str:
    """Human-readable message for chat and e-mail."""
    return "\n".join([f"Daily Mix {source} alert for {day} ({len(alerts)}):", *[f"- {a}" for a in alerts]])
