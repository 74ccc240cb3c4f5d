"""Helpers shared by tests of several packages: hand-built events, publications and a clock the test moves.

Test files import from here, never from each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import RerankConfig, Settings, WorldConfig
from pipeline.core.io import atomic_write_json
from pipeline.publish.files import date_dir
from pipeline.reranking.rules import explore_positions, slot_counts


def make_events(rows: Sequence[tuple[int, int, str, bool]]) -> pd.DataFrame:
    """A validated, organic event frame (schema.EVENT_DTYPES) from (user_id, track_id, ISO UTC ts, skipped) rows."""
    frame = pd.DataFrame(
        {
            s.USER_ID: [r[0] for r in rows],
            s.TRACK_ID: [r[1] for r in rows],
            s.TS: pd.to_datetime([r[2] for r in rows], utc=True),
            s.MS_PLAYED: [5_000 if r[3] else 180_000 for r in rows],
            s.SKIPPED: [r[3] for r in rows],
            s.MIX_ID: pd.NA,
            s.POSITION: pd.NA,
            s.POLICY: s.POLICY_ORGANIC,
            s.PROPENSITY: 1.0,
        }
    )
    return frame.astype(s.EVENT_DTYPES)[list(s.EVENT_COLUMNS)]


# --- publications ------------------------------------------------------------------------------------------------

DAY = "2026-11-01"
DEFAULT_RERANK = RerankConfig()
EXPLORE_AT = tuple(explore_positions(slot_counts(DEFAULT_RERANK)[0], DEFAULT_RERANK.tracks_per_mix))  # the defaults'
# the 20% minimum of 30, exploration slots included: the first exploitation slots are the other discoveries
DISCOVERY_AT = (*[p for p in range(30) if p not in EXPLORE_AT][:6 - len(EXPLORE_AT)], *EXPLORE_AT)
LINEAGE = {"model_version": "3", "index_version": "idx-0a1b2c", "feature_version": f"{DAY}.deadbeef"}


def mix_slots(day: str, user: int, mix: int, first_track: int) -> pd.DataFrame:
    """One valid 30-slot mix under the default rules: distinct tracks and artists, the defaults' exploration
    slots (EXPLORE_AT), 6 discoveries."""
    position = np.arange(30)
    explore = np.isin(position, EXPLORE_AT)
    frame = pd.DataFrame({
        s.DATE: day,
        s.USER_ID: user,
        s.MIX_ID: f"{day}:{user}:{mix}",
        s.MIX_INDEX: mix,
        s.MIX_TITLE: f"Rock · calm {mix}",
        s.POSITION: position,
        s.TRACK_ID: first_track + position,
        s.ARTIST_ID: 10 * (first_track + position),
        s.GENRE: np.where(explore, "jazz", "rock"),
        s.MOOD: "calm",
        s.DISCOVERY: np.isin(position, DISCOVERY_AT),
        s.POLICY: np.where(explore, s.POLICY_EXPLORE, s.POLICY_EXPLOIT),
        s.PROPENSITY: np.where(explore, 0.25, 1.0),
        s.SCORE: np.where(explore, np.nan, 1.0 - position / 100),
        **{s.MODEL_VERSION: LINEAGE["model_version"], s.INDEX_VERSION: LINEAGE["index_version"],
           s.FEATURE_VERSION: LINEAGE["feature_version"]},
    })
    return frame[list(s.PUBLISHED_COLUMNS)].astype(s.PUBLISHED_DTYPES)


def night_slots(day: str = DAY) -> pd.DataFrame:
    """User 1 with two mixes, user 2 with one: 90 slots in publication order."""
    return pd.concat(
        [mix_slots(day, 1, 0, 100), mix_slots(day, 1, 1, 200), mix_slots(day, 2, 0, 100)], ignore_index=True
    )


def write_plan(settings: Settings, day: str = DAY) -> str:
    plan = {"date": day, **LINEAGE, "model_name": "dailymix-ranker", "model_run_id": "mlflow-run-1",
            "shards": [[2], [1]]}
    return str(atomic_write_json(plan, settings.home / "nightly" / f"date={day}" / "plan.json"))


def write_shards(settings: Settings, slots: pd.DataFrame, name: str = "a") -> list[str]:
    """Shard 0 holds user 2, shard 1 user 1; rows shuffled so publication has to sort them."""
    directory = settings.home / "nightly" / f"shards-{name}"
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, user in enumerate((2, 1)):
        part = slots.loc[slots[s.USER_ID] == user].sample(frac=1.0, random_state=shard)
        path = directory / f"shard-{shard:04d}.parquet"
        part.to_parquet(path, index=False)
        paths.append(str(path))
    return paths


def mixes_files(settings: Settings, day: str = DAY) -> list[Path]:
    return sorted(date_dir(settings, day).glob("mixes-*.parquet"))


# --- serving ----------------------------------------------------------------------------------------------------

TOKEN = "test-token-5f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START = pd.Timestamp(f"{DAY}T12:00:00Z")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, at: pd.Timestamp) -> None:
        self.at = at

    def __call__(self) -> pd.Timestamp:
        return self.at


def catalog_mix(catalog: pd.DataFrame, user: int, mix: int, artists: list[int]) -> pd.DataFrame:
    """A valid 30-slot mix of real catalog tracks: two by artists[0], one by each of the next 28."""
    first = catalog.loc[catalog[s.ARTIST_ID] == artists[0]].head(2)
    rest = catalog.loc[catalog[s.ARTIST_ID].isin(artists[1:29])].drop_duplicates(s.ARTIST_ID)
    picked = pd.concat([first, rest]).head(30)
    slots = mix_slots(DAY, user, mix, 0)
    slots[s.TRACK_ID] = picked[s.TRACK_ID].to_numpy()
    slots[s.ARTIST_ID] = picked[s.ARTIST_ID].to_numpy()
    return slots


# --- end-to-end ---------------------------------------------------------------------------------------------------

TINY_WORLD = WorldConfig(seed=11, n_users=40, n_tracks=1200, n_artists=150, history_days=4, plays_per_day=25)
NIGHTS = 3  # the last history days of the e2e world that get mixes (and a monitoring row)
