"""Column names and dtypes, defined once and used as defaults everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

# Identifiers
USER_ID = "user_id"
TRACK_ID = "track_id"
ARTIST_ID = "artist_id"
GENRE = "genre"
MOOD = "mood"

# Play events: one row per track start (played through or skipped).
TS = "ts"
MS_PLAYED = "ms_played"
SKIPPED = "skipped"
MIX_ID = "mix_id"
POSITION = "position"
POLICY = "policy"
PROPENSITY = "propensity"

EVENT_COLUMNS: tuple[str, ...] = (
    USER_ID, TRACK_ID, TS, MS_PLAYED, SKIPPED, MIX_ID, POSITION, POLICY, PROPENSITY,
)
# pandas dtypes of a validated event frame (ts is tz-aware UTC).
EVENT_DTYPES: dict[str, str] = {
    USER_ID: "int64",
    TRACK_ID: "int64",
    TS: "datetime64[ns, UTC]",
    MS_PLAYED: "int64",
    SKIPPED: "bool",
    MIX_ID: "string",
    POSITION: "Int64",
    POLICY: "string",
    PROPENSITY: "float64",
}

# Who put the track in front of the user. Organic = the user chose it (search, library).
POLICY_ORGANIC = "organic"
POLICY_EXPLOIT = "exploit"
POLICY_EXPLORE = "explore"
POLICIES: tuple[str, ...] = (POLICY_ORGANIC, POLICY_EXPLOIT, POLICY_EXPLORE)

# Catalog: one row per track.
ARTIST_NAME = "artist_name"
TITLE = "title"
RELEASE_DATE = "release_date"
DURATION_MS = "duration_ms"
POPULARITY = "popularity"  # latent popularity weight of the world (sums to 1)
CATALOG_COLUMNS: tuple[str, ...] = (
    TRACK_ID, TITLE, ARTIST_ID, ARTIST_NAME, GENRE, MOOD, RELEASE_DATE, DURATION_MS, POPULARITY,
)

# Ground-truth tastes of synthetic users: a mixture over (genre, mood) cells.
WEIGHT = "weight"
TASTE_COLUMNS: tuple[str, ...] = (USER_ID, GENRE, MOOD, WEIGHT)

# Quarantine: the original row (as read, all columns as strings) plus why and where.
QUARANTINE_REASON = "quarantine_reason"
SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"  # 1-based data row number in the source file (header excluded)

# Feature timestamps (Feast)
EVENT_TIMESTAMP = "event_timestamp"

# Published mixes: one row per slot.
DATE = "date"
MIX_INDEX = "mix_index"
MIX_TITLE = "mix_title"
DISCOVERY = "discovery"
SCORE = "score"
MODEL_VERSION = "model_version"
INDEX_VERSION = "index_version"
FEATURE_VERSION = "feature_version"
RUN_ID = "run_id"

# Published slots: their columns in order and their pandas dtypes (file and Postgres stores alike).
PUBLISHED_COLUMNS: tuple[str, ...] = (
    DATE, USER_ID, MIX_ID, MIX_INDEX, MIX_TITLE, POSITION, TRACK_ID, ARTIST_ID, GENRE, MOOD,
    DISCOVERY, POLICY, PROPENSITY, SCORE, MODEL_VERSION, INDEX_VERSION, FEATURE_VERSION,
)
PUBLISHED_DTYPES: dict[str, str] = {
    DATE: "object", USER_ID: "int64", MIX_ID: "object", MIX_INDEX: "int64", MIX_TITLE: "object",
    POSITION: "int64", TRACK_ID: "int64", ARTIST_ID: "int64", GENRE: "object", MOOD: "object",
    DISCOVERY: "bool", POLICY: "object", PROPENSITY: "float64", SCORE: "float64",
    MODEL_VERSION: "object", INDEX_VERSION: "object", FEATURE_VERSION: "object",
}

# A mix id names the night that published it, the user and the mix: "YYYY-MM-DD:<user_id>:<mix_index>", ASCII
# digits only (the form is also read by Arrow's RE2, whose classes are ASCII, and ids name no directory unparsed).
MIX_ID_FORM = r"[0-9]{4}-[0-9]{2}-[0-9]{2}:[0-9]{1,19}:[0-9]{1,3}"
MIX_ID_PATTERN = re.compile(MIX_ID_FORM)
MIX_ID_MAX_LENGTH = 10 + 1 + 19 + 1 + 3


def mix_id(day: str, user_id: int, mix_index: int) -> str:
    """The id of user `user_id`'s mix number `mix_index` published for `day`."""
    return f"{day}:{user_id}:{mix_index}"


def mix_day(value: object) -> str | None:
    """The publication day a mix id names, or None when `value` is not a well-formed mix id.

    Only this parser reads mix ids; nothing builds a path from one without it.
    """
    if not isinstance(value, str) or len(value) > MIX_ID_MAX_LENGTH:
        return None
    return None if MIX_ID_PATTERN.fullmatch(value) is None else calendar_day(value[:10])


def calendar_day(text: str) -> str | None:
    """`text` when it is a real calendar day written YYYY-MM-DD (ASCII digits), else None."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return text if day.isoformat() == text else None


def mix_days(mix_ids: Iterable[object]) -> list[str]:
    """The distinct publication days named by the well-formed ids among `mix_ids`, oldest first."""
    days = {mix_day(m) for m in set(mix_ids)}
    return sorted(d for d in days if d is not None)
