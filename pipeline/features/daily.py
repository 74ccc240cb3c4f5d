"""The daily feature pipeline: ingest the day's events, write offline snapshots, fill the online store.

`FLOW` is the features flow its DAG and the simulation run. A run covers its own day, or with the param
`from_date` every landed day from that date through its own (a history loaded at once); each day's outputs are
keyed by that day, so a rerun overwrites them. The online store serves the run's own day, the latest snapshot.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from pipeline.core.config import Settings
from pipeline.core.flow import Flow, FlowRun, Step
from pipeline.core.paths import Layout
from pipeline.data.catalog import read_catalog
from pipeline.data.events import read_raw_events
from pipeline.data.ingest import ingest_file
from pipeline.features import store as fs
from pipeline.features.definitions import track_stats, user_profile, user_recent, window_days

log = logging.getLogger(__name__)


def ingest_day(settings: Settings, day: str, contracts: bool = True) -> dict:
    """Validate the day's landing file into the raw store (bad rows to quarantine).

    `contracts=False` skips the Great Expectations contract check (seconds per file) but not the row rules;
    the closed-loop simulator uses it for its own generated files.
    """
    layout = Layout(settings.home)
    source = layout.landing(day)
    if not source.exists():
        raise FileNotFoundError(f"no events landed for {day}: expected {source}")
    report = ingest_file(source, day, layout, read_catalog(layout), max_bad_row_share=settings.max_bad_row_share,
                         contract_root=layout.home / "validation" if contracts else None)
    log.info(report.summary())
    return {"day": day, "rows_read": report.rows_read, "accepted": report.accepted,
            "quarantined": report.quarantined, "raw_path": str(report.raw_path)}


def build_offline_features(settings: Settings, day: str) -> dict[str, str]:
    """Snapshots of every feature view as of the end of `day`, overwriting that day's partitions."""
    layout = Layout(settings.home)
    catalog = read_catalog(layout)
    window = read_raw_events(layout, window_days(day, settings.training.window_days))
    frames = {
        fs.USER_PROFILE: user_profile(window, catalog, day),
        fs.TRACK_STATS: track_stats(window, catalog, day),
        fs.USER_RECENT: user_recent(window, day),
    }
    paths = fs.write_snapshots(settings, day, frames)
    log.info("offline features for %s: %s", day, {view: len(frame) for view, frame in frames.items()})
    return paths


def materialize_online(settings: Settings, day: str) -> str:
    """Serve the day's snapshot from the online store; returns the feature version."""
    fs.materialize(settings, day)
    return fs.feature_version(settings, day)


def covered_days(settings: Settings, day: str, from_date: str | None = None) -> list[str]:
    """The days a features run for `day` covers, oldest first: `day` alone, or every landed day from `from_date`
    through `day` (`day` itself always, so a missing file for it fails ingest with its path)."""
    if not from_date:
        return [day]
    first, last = date.fromisoformat(from_date), date.fromisoformat(day)
    if first > last:
        raise ValueError(f"from_date {from_date} is after the run's day {day}")
    layout = Layout(settings.home)
    span = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return [d for d in span if d == day or layout.landing(d).exists()]


def _ingest_days(run: FlowRun) -> list[dict]:
    days = covered_days(run.settings, run.day, run.params.get("from_date"))
    return [ingest_day(run.settings, day, contracts=run.params.get("contracts", True)) for day in days]


def _offline_snapshots(run: FlowRun) -> dict[str, dict[str, str]]:
    return {report["day"]: build_offline_features(run.settings, report["day"]) for report in run["ingest"]}


# Params: `from_date` (the DAG's param: cover every landed day from it); `contracts` (False skips the Great
# Expectations contract check of each landed file, as the simulator does for the files it generates).
FLOW = Flow("dailymix_features", (
    Step("ingest", _ingest_days),
    Step("offline_store", _offline_snapshots, after=("ingest",)),
    Step("online_store", lambda run: materialize_online(run.settings, run.day), after=("offline_store",)),
))
