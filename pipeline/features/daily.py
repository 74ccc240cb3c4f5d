"""The daily feature pipeline: ingest the day's events, write offline snapshots, fill the online store."""

from __future__ import annotations

import logging

from pipeline.core.config import Settings
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
