"""The skew gate's data: entity features as training saw them and as serving is about to use them.

One function per entity turns feature-store rows into the gate's columns, for the offline
snapshots of the training window and for tonight's online values alike. The suites and the
validation itself live in `validation/skew.py` (Great Expectations).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import registry
from pipeline.core import schema as s
from pipeline.core.alerts import raise_alerts
from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_json, read_json
from pipeline.core.paths import Layout
from pipeline.data.catalog import read_catalog
from pipeline.features import store as fs
from pipeline.features.definitions import vocabulary, window_days

log = logging.getLogger(__name__)
USERS, TRACKS = "users", "tracks"
NUMERIC = {USERS: ["log_plays", "skip_rate", "completion"], TRACKS: ["log_plays", "skip_rate"]}
CATEGORICAL = {USERS: ["top_genre"], TRACKS: []}
SUITES_DIR = "skew_suites"


class SkewGateError(Exception):
    """Serving features drifted from training (or are stale): nothing may be published."""


def user_frame(rows: pd.DataFrame, genres: list[str]) -> pd.DataFrame:
    """Gate columns per user: activity, skip rate, completion, the genre they play most."""
    affinity = rows["genre_affinity"].to_numpy()
    top = [genres[int(np.argmax(v))] if v is not None and not _isnan(v) else None for v in affinity]
    return pd.DataFrame({
        "log_plays": np.log1p(pd.to_numeric(rows["plays"], errors="coerce").to_numpy(dtype=float)),
        "skip_rate": pd.to_numeric(rows["skip_rate"], errors="coerce").to_numpy(dtype=float),
        "completion": pd.to_numeric(rows["completion"], errors="coerce").to_numpy(dtype=float),
        "top_genre": pd.Series(top, dtype="object"),
    })


def track_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Gate columns per track: popularity and skip rate."""
    return pd.DataFrame({
        "log_plays": np.log1p(pd.to_numeric(rows["plays"], errors="coerce").to_numpy(dtype=float)),
        "skip_rate": pd.to_numeric(rows["skip_rate"], errors="coerce").to_numpy(dtype=float),
    })


def _isnan(value) -> bool:
    return isinstance(value, float) and np.isnan(value)


def training_frames(settings: Settings, day: str) -> dict[str, list[pd.DataFrame]]:
    """The gate columns of each offline snapshot in the profile window ending `day`, oldest first."""
    genres = vocabulary(read_catalog(Layout(settings.home)), s.GENRE)
    frames: dict[str, list[pd.DataFrame]] = {USERS: [], TRACKS: []}
    for snapshot_day in window_days(day, settings.skew.profile_days):
        users = fs.offline_dir(settings, fs.USER_PROFILE) / f"date={snapshot_day}" / "part.parquet"
        tracks = fs.offline_dir(settings, fs.TRACK_STATS) / f"date={snapshot_day}" / "part.parquet"
        if users.exists() and tracks.exists():
            frames[USERS].append(user_frame(pd.read_parquet(users), genres))
            frames[TRACKS].append(track_frame(pd.read_parquet(tracks)))
    if not frames[USERS]:
        raise ValueError(f"no offline feature snapshots in the {settings.skew.profile_days} days to {day}")
    return frames


def write_training_suites(settings: Settings, day: str, directory: Path) -> Path:
    """Profile the training window into one GE suite per entity, saved beside the training set."""
    from validation.skew import build_suite, save_suite

    frames = training_frames(settings, day)
    target = Path(directory) / SUITES_DIR
    for entity, days in frames.items():
        suite = build_suite(f"dailymix-{entity}", days, NUMERIC[entity], CATEGORICAL[entity], settings.skew.z)
        save_suite(suite, target / f"{entity}.json")
    log.info("skew suites from %d daily snapshots to %s (z=%s)", len(frames[USERS]), day, settings.skew.z)
    return target


def serving_frames(settings: Settings, users: list[int]) -> tuple[dict[str, pd.DataFrame], pd.Timestamp | None]:
    """Tonight's online values in the gate's columns, and the oldest feature timestamp among them."""
    catalog = read_catalog(Layout(settings.home))
    store = fs.feature_store(settings)
    user_rows = fs.online(settings, fs.USER_PROFILE, s.USER_ID, users, fs.USER_FEATURES, store)
    track_rows = fs.online(settings, fs.TRACK_STATS, s.TRACK_ID, catalog[s.TRACK_ID], fs.TRACK_FEATURES, store)
    stamps = pd.concat([user_rows[fs.FEATURE_TS], track_rows[fs.FEATURE_TS]]).dropna()
    frames = {USERS: user_frame(user_rows, vocabulary(catalog, s.GENRE)), TRACKS: track_frame(track_rows)}
    return frames, (stamps.min() if len(stamps) else None)


def freshness_problem(day: str, oldest: pd.Timestamp | None, max_age_hours: float) -> str | None:
    """Why tonight's features are too old for the run's day, or None when they are fresh."""
    as_of = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    if oldest is None:
        return "no features in the online store: run dailymix_features"
    age = (as_of - oldest) / pd.Timedelta(hours=1)
    if age > max_age_hours:
        return f"features are {age:.0f} h old at the end of {day} (snapshot of {oldest:%Y-%m-%d %H:%M}), " \
               f"above the {max_age_hours:.0f} h maximum"
    return None


def champion_suites(settings: Settings, run_id: str) -> dict[str, object]:
    from validation.skew import load_suite

    directory = registry.download_artifact(settings, run_id, SUITES_DIR)
    return {entity: load_suite(directory / f"{entity}.json") for entity in (USERS, TRACKS)}


def run_gate(settings: Settings, plan_path: str) -> dict:
    """Validate tonight's serving features against the champion's suites; raise on skew or staleness."""
    from validation.skew import validate

    night = read_json(Path(plan_path))
    day = night["date"]
    users = sorted(u for shard in night["shards"] for u in shard)
    frames, oldest = serving_frames(settings, users)
    problems = []
    stale = freshness_problem(day, oldest, settings.skew.max_feature_age_hours)
    if stale:
        problems.append(f"freshness: {stale}")
    root = Layout(settings.home).home / "validation"
    failures, docs = validate(root, frames, champion_suites(settings, night["model_run_id"]), f"nightly-{day}")
    problems += [str(f) for f in failures]
    result = {"date": day, "model_version": night["model_version"], "passed": not problems,
              "problems": problems, "data_docs": str(docs)}
    atomic_write_json(result, root / "results" / f"date={day}.json")
    raise_alerts(settings, day, "skew_gate", problems)
    if problems:
        raise SkewGateError(f"skew gate failed for {day} (model v{night['model_version']}); nothing published, "
                            f"the previous mixes stay current. {len(problems)} problem(s):\n  "
                            + "\n  ".join(problems) + f"\nData Docs: {docs}")
    log.info("skew gate passed for %s; Data Docs: %s", day, docs)
    return result

