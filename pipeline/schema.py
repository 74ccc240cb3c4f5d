"""Column names and dtypes, defined once and used as defaults everywhere."""

from __future__ import annotations

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
