"""Health of the loop: diversity of what is published, engagement with it, and drift alerts.

A recommender retrained on its own output narrows: genre entropy falls and skips rise. The
metrics here are computed per day from the publication and the day's events and compared with
a trailing baseline.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import schema as s
from pipeline.config import Settings
from pipeline.ingest import read_raw_events
from pipeline.io import atomic_write_json, read_json
from pipeline.paths import Layout
from pipeline.publish import read_publication

log = logging.getLogger(__name__)
BASELINE_DAYS = 7
ENTROPY_DROP = 0.10  # alert when entropy falls more than 10% below the trailing mean
SKIP_RISE = 0.05  # alert when the skip rate rises more than 5 points above the trailing mean


def entropy(labels: pd.Series) -> float:
    """Shannon entropy (bits) of the distribution of labels; 0 for one label or none."""
    p = labels.value_counts(normalize=True).to_numpy()
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def publication_metrics(slots: pd.DataFrame, catalog_size: int) -> dict[str, float]:
    """Diversity and composition of one night's published slots."""
    if slots.empty:
        return {"users": 0, "mixes": 0, "slots": 0}
    per_mix = slots.groupby([s.USER_ID, s.MIX_INDEX])
    return {
        "users": int(slots[s.USER_ID].nunique()),
        "mixes": int(per_mix.ngroups),
        "slots": len(slots),
        "mixes_per_user": per_mix.ngroups / slots[s.USER_ID].nunique(),
        "tracks_per_mix": len(slots) / per_mix.ngroups,
        "discovery_share": float(slots[s.DISCOVERY].mean()),
        "explore_share": float((slots[s.POLICY] == s.POLICY_EXPLORE).mean()),
        "global_genre_entropy": entropy(slots[s.GENRE]),
        "mean_mix_genre_entropy": float(per_mix[s.GENRE].agg(entropy).mean()),
        "user_genre_entropy": float(slots.groupby(s.USER_ID)[s.GENRE].agg(entropy).mean()),
        "coverage": slots[s.TRACK_ID].nunique() / catalog_size,
    }


def engagement_metrics(events: pd.DataFrame) -> dict[str, float | None]:
    """Skip rates of the day's track starts, overall and by the policy that placed the track."""
    def rate(frame: pd.DataFrame) -> float | None:
        return float(frame[s.SKIPPED].mean()) if len(frame) else None  # None: no such events that day

    return {
        "events": len(events),
        "skip_rate": rate(events),
        "skip_rate_exploit": rate(events.loc[events[s.POLICY] == s.POLICY_EXPLOIT]),
        "skip_rate_explore": rate(events.loc[events[s.POLICY] == s.POLICY_EXPLORE]),
        "skip_rate_organic": rate(events.loc[events[s.POLICY] == s.POLICY_ORGANIC]),
    }


def drift_alerts(today: dict[str, float], history: pd.DataFrame) -> list[str]:
    """Compare today with the mean of the trailing days; empty history → no alerts."""
    alerts = []
    if history.empty:
        return alerts
    for metric in ("global_genre_entropy", "mean_mix_genre_entropy"):
        base = history[metric].mean() if metric in history else np.nan
        value = today.get(metric)
        if value is not None and base > 0 and value < (1 - ENTROPY_DROP) * base:
            alerts.append(f"{metric} {today[metric]:.3f} is more than {ENTROPY_DROP:.0%} below "
                          f"its {len(history)}-day mean {base:.3f}")
    base_skip = history["skip_rate"].astype(float).mean() if "skip_rate" in history else np.nan
    skip = today.get("skip_rate")
    if skip is not None and not np.isnan(base_skip) and skip > base_skip + SKIP_RISE:
        alerts.append(f"skip_rate {today['skip_rate']:.3f} is more than {SKIP_RISE:.0%} points above "
                      f"its {len(history)}-day mean {base_skip:.3f}")
    return alerts


def metrics_path(settings: Settings, day: str) -> Path:
    return Layout(settings.home).monitoring / "metrics" / f"date={day}.json"


def record_day(settings: Settings, day: str, catalog_size: int) -> str:
    """Store the day's health row (publication + engagement) for trends; idempotent by date."""
    layout = Layout(settings.home)
    _, slots = read_publication(settings, day)
    row = {"date": day, **publication_metrics(slots, catalog_size),
           **engagement_metrics(read_raw_events(layout, [day]))}
    return str(atomic_write_json(row, metrics_path(settings, day)))


def metrics_history(settings: Settings, before: str | None = None, days: int | None = None) -> pd.DataFrame:
    """Stored daily rows, oldest first (optionally only the `days` before `before`)."""
    files = sorted((Layout(settings.home).monitoring / "metrics").glob("date=*.json"))
    rows = [read_json(f) for f in files]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if before is not None:
        frame = frame.loc[frame["date"] < before]
    return frame.tail(days) if days else frame


def check_drift(settings: Settings, day: str) -> list[str]:
    """Alerts for the day against its trailing baseline, written to the alert log."""
    today = read_json(metrics_path(settings, day))
    alerts = drift_alerts(today, metrics_history(settings, before=day, days=BASELINE_DAYS))
    raise_alerts(settings, day, "monitor", alerts)
    return alerts


def raise_alerts(settings: Settings, day: str, source: str, alerts: list[str]) -> None:
    """The one alert path: a file per (day, source) for the UI and a warning in the task log."""
    path = Layout(settings.home).monitoring / "alerts" / f"date={day}" / f"{source}.json"
    atomic_write_json({"date": day, "source": source, "alerts": alerts}, path)
    for alert in alerts:
        log.warning("ALERT [%s] %s: %s", source, day, alert)
