"""Feature definitions: one function per feature family, used by training and serving alike.

Daily snapshots are computed from the raw event log and stamped with the end of their day
(`day + 1` at 00:00 UTC), the moment they become true. Feast joins them point-in-time for
training and materialises the newest into the online store for serving.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core import schema as s

# Model inputs, in the order the ranker sees them.
FEATURE_COLUMNS: tuple[str, ...] = (
    "genre_affinity",
    "mood_affinity",
    "user_log_plays",
    "user_skip_rate",
    "user_completion",
    "track_log_plays",
    "track_skip_rate",
    "track_age_years",
    "duration_min",
    "als_score",
    "known",
)
LABEL = "label"
SKIP_PRIOR_STRENGTH = 5.0  # pseudo-plays pulling a sparse skip rate toward the global one


def snapshot_timestamp(day: str) -> pd.Timestamp:
    """When a day's snapshot becomes valid: the next midnight, UTC."""
    return pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)


def window_days(day: str, days: int) -> list[str]:
    """The `days` ISO dates ending with `day`, oldest first."""
    end = pd.Timestamp(day)
    return [(end - pd.Timedelta(days=i)).strftime("%Y-%m-%d") for i in range(days - 1, -1, -1)]


def vocabulary(catalog: pd.DataFrame, column: str) -> list[str]:
    """Stable order of a categorical column; array features are indexed by it."""
    return sorted(catalog[column].astype(str).unique().tolist())


def _shares(events: pd.DataFrame, column: str, vocab: list[str]) -> pd.DataFrame:
    """Per user, the share of completed plays in each category, Laplace-smoothed."""
    completed = events.loc[~events[s.SKIPPED]]
    users = pd.Index(events[s.USER_ID].unique())
    counts = np.zeros((len(users), len(vocab)))
    rows = users.get_indexer(completed[s.USER_ID])
    cols = pd.Categorical(completed[column].astype(str), categories=vocab).codes
    known = cols >= 0
    np.add.at(counts, (rows[known], cols[known]), 1.0)
    smoothed = counts + 0.1
    return pd.DataFrame(smoothed / smoothed.sum(axis=1, keepdims=True), index=users)


def user_profile(events: pd.DataFrame, catalog: pd.DataFrame, day: str) -> pd.DataFrame:
    """Per active user: genre and mood affinity vectors, activity and skip rate over the window."""
    columns = [s.USER_ID, s.EVENT_TIMESTAMP, "genre_affinity", "mood_affinity", "plays", "skip_rate", "completion"]
    if events.empty:
        return pd.DataFrame(columns=columns)
    enriched = events.merge(catalog[[s.TRACK_ID, s.GENRE, s.MOOD, s.DURATION_MS]], on=s.TRACK_ID, how="left")
    genre = _shares(enriched, s.GENRE, vocabulary(catalog, s.GENRE))
    mood = _shares(enriched, s.MOOD, vocabulary(catalog, s.MOOD))
    enriched["completion"] = completion(enriched[s.MS_PLAYED], enriched[s.DURATION_MS])
    activity = enriched.groupby(s.USER_ID).agg(size=(s.SKIPPED, "size"), mean=(s.SKIPPED, "mean"),
                                               completion=("completion", "mean"))
    users = np.sort(activity.index.to_numpy())
    return pd.DataFrame(
        {
            s.USER_ID: users.astype("int64"),
            s.EVENT_TIMESTAMP: snapshot_timestamp(day),
            "genre_affinity": list(genre.loc[users].to_numpy(dtype=np.float32)),
            "mood_affinity": list(mood.loc[users].to_numpy(dtype=np.float32)),
            "plays": activity.loc[users, "size"].to_numpy(dtype="int64"),
            "skip_rate": activity.loc[users, "mean"].to_numpy(dtype="float32"),
            "completion": activity.loc[users, "completion"].to_numpy(dtype="float32"),
        }
    )[columns]


def completion(ms_played: pd.Series, duration_ms: pd.Series) -> np.ndarray:
    """Share of the track heard, capped at 1 (NaN when the duration is unknown)."""
    duration = duration_ms.to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        share = ms_played.to_numpy(dtype="float64") / np.where(duration > 0, duration, np.nan)
    return np.minimum(share, 1.0)


def track_stats(events: pd.DataFrame, catalog: pd.DataFrame, day: str) -> pd.DataFrame:
    """Per catalog track: plays and a shrunk skip rate over the window (zeros for unplayed tracks)."""
    grouped = events.groupby(s.TRACK_ID)[s.SKIPPED].agg(["size", "sum"])
    plays = grouped["size"].reindex(catalog[s.TRACK_ID], fill_value=0).to_numpy(dtype=np.float64)
    skips = grouped["sum"].reindex(catalog[s.TRACK_ID], fill_value=0).to_numpy(dtype=np.float64)
    global_rate = float(events[s.SKIPPED].mean()) if len(events) else 0.5
    shrunk = (skips + SKIP_PRIOR_STRENGTH * global_rate) / (plays + SKIP_PRIOR_STRENGTH)
    return pd.DataFrame(
        {
            s.TRACK_ID: catalog[s.TRACK_ID].to_numpy(dtype="int64"),
            s.EVENT_TIMESTAMP: snapshot_timestamp(day),
            "plays": plays.astype("int64"),
            "skip_rate": shrunk.astype("float32"),
        }
    )


def user_recent(events: pd.DataFrame, day: str, n: int = 10) -> pd.DataFrame:
    """Per user active on `day`: the last n track starts of that day and whether each was skipped."""
    return last_interactions(events.loc[events[s.TS].dt.strftime("%Y-%m-%d") == day], n)


def last_interactions(events: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """Per user, the last n starts of `events` as one user_recent row (the daily snapshot and the API push share it)."""
    columns = [s.USER_ID, s.EVENT_TIMESTAMP, "last_track_ids", "last_skipped", "last_ts"]
    ordered = events.sort_values([s.USER_ID, s.TS])
    if ordered.empty:
        return pd.DataFrame(columns=columns)
    tail = ordered.groupby(s.USER_ID).tail(n)
    grouped = tail.groupby(s.USER_ID)
    return pd.DataFrame(
        {
            s.USER_ID: np.array(list(grouped.groups), dtype="int64"),
            s.EVENT_TIMESTAMP: grouped[s.TS].max().to_numpy(),
            "last_track_ids": [g.to_numpy(dtype="int64") for _, g in grouped[s.TRACK_ID]],
            "last_skipped": [g.to_numpy(dtype="int64") for _, g in grouped[s.SKIPPED]],
            "last_ts": [epoch_ms(g) for _, g in grouped[s.TS]],
        }
    )[columns]


def epoch_ms(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 epoch milliseconds: per-interaction times fit an Int64 array feature."""
    return pd.to_datetime(ts, utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()


USER_ROW = "user_row"  # position of the pair's user in the user feature table
TRACK_ROW = "track_row"  # position of the pair's track in the track feature table
Factors = tuple[np.ndarray, np.ndarray, dict[int, int], dict[int, int]]  # `Embeddings.lookup()`


def pair_features(
    pairs: pd.DataFrame,
    users: pd.DataFrame,
    tracks: pd.DataFrame,
    catalog: pd.DataFrame,
    factors: Factors | None,
    day: str,
) -> pd.DataFrame:
    """The ranker's inputs for (user, track) pairs — the single definition both paths use.

    `pairs` has user_id, track_id, a boolean `known` and USER_ROW / TRACK_ROW: positions into
    `users` (Feast user_profile values) and `tracks` (Feast track_stats values). Serving has one
    row per id; training one per (id, day), so a pair sees the values of its own day.
    `factors` is `Embeddings.lookup()`, or None for a zero ALS score.
    """
    return PairFeatureTables.build(users, tracks, catalog, factors, day).features(pairs)


@dataclass(frozen=True)
class PairFeatureTables:
    """`pair_features` in two steps: the per-user, per-track and per-catalog-row arrays, built once, then any
    number of pair batches picked from them by position (a nightly shard builds the tables once per shard)."""

    catalog_index: pd.Index  # track id -> catalog row
    genre_code: np.ndarray  # per catalog row: its genre's position in the genre vocabulary
    mood_code: np.ndarray
    age_years: np.ndarray  # per catalog row, as of the day (NaN release: 0)
    duration_min: np.ndarray
    genre_affinity: np.ndarray  # users x genres (a NaN row: no vector)
    mood_affinity: np.ndarray
    user_plays: np.ndarray  # per user feature row
    user_skip_rate: np.ndarray
    user_completion: np.ndarray
    track_plays: np.ndarray  # per track feature row
    track_skip_rate: np.ndarray
    factors: FactorRows

    @classmethod
    def build(cls, users: pd.DataFrame, tracks: pd.DataFrame, catalog: pd.DataFrame,
              factors: Factors | None, day: str) -> PairFeatureTables:
        release = pd.to_datetime(catalog[s.RELEASE_DATE]).to_numpy()
        age_years = (pd.Timestamp(day).to_datetime64() - release) / np.timedelta64(365, "D")
        genres, moods = vocabulary(catalog, s.GENRE), vocabulary(catalog, s.MOOD)
        return cls(
            catalog_index=pd.Index(catalog[s.TRACK_ID].to_numpy()),
            genre_code=pd.Index(genres).get_indexer(catalog[s.GENRE].astype(str)),
            mood_code=pd.Index(moods).get_indexer(catalog[s.MOOD].astype(str)),
            age_years=np.nan_to_num(age_years.astype("float64"), nan=0.0),
            duration_min=catalog[s.DURATION_MS].to_numpy(dtype="float64") / 60_000.0,
            genre_affinity=_vectors(users["genre_affinity"], len(genres)),
            mood_affinity=_vectors(users["mood_affinity"], len(moods)),
            user_plays=_numeric(users["plays"]),
            user_skip_rate=_numeric(users["skip_rate"]),
            user_completion=_numeric(users["completion"]),
            track_plays=_numeric(tracks["plays"]),
            track_skip_rate=_numeric(tracks["skip_rate"]),
            factors=FactorRows.of(factors),
        )

    def features(self, pairs: pd.DataFrame) -> pd.DataFrame:
        """FEATURE_COLUMNS of `pairs` (see `pair_features`)."""
        meta_row = self.catalog_index.get_indexer(pairs[s.TRACK_ID])
        if (meta_row < 0).any():
            missing = pairs[s.TRACK_ID].to_numpy()[meta_row < 0]
            raise KeyError(f"tracks not in the catalog: {sorted(set(missing.tolist()))[:10]}")
        user_row, track_row = pairs[USER_ROW].to_numpy(), pairs[TRACK_ROW].to_numpy()
        frame = pd.DataFrame(
            {
                "genre_affinity": _at_column(self.genre_affinity, user_row, self.genre_code[meta_row]),
                "mood_affinity": _at_column(self.mood_affinity, user_row, self.mood_code[meta_row]),
                "user_log_plays": np.log1p(_at(self.user_plays, user_row)),
                "user_skip_rate": _at(self.user_skip_rate, user_row),
                "user_completion": _at(self.user_completion, user_row),
                "track_log_plays": np.log1p(self.track_plays[track_row]),
                "track_skip_rate": self.track_skip_rate[track_row],
                "track_age_years": self.age_years[meta_row],
                "duration_min": self.duration_min[meta_row],
                "als_score": self.factors.scores(pairs),
                "known": pairs["known"].to_numpy(dtype="float64"),
            }
        )
        return frame[list(FEATURE_COLUMNS)]


def _at(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """values[rows], NaN where the row is -1 (no feature row: a user without a profile), never the last row."""
    picked = values[np.maximum(rows, 0)] if len(values) else np.full(len(rows), np.nan)
    return np.where(rows >= 0, picked, np.nan)


def _numeric(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64")


def _vectors(vectors: pd.Series, width: int) -> np.ndarray:
    """One row per affinity vector (a NaN row where there is none); one NaN row when there are no users."""
    missing = np.full(width, np.nan)
    return np.vstack([missing if _is_null(v) else np.asarray(v, dtype=np.float64) for v in vectors]
                     or [missing]).reshape(-1, width)


def _at_column(matrix: np.ndarray, rows: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Entry `column` of the affinity vector at `rows`; NaN where there is no vector (no profile)."""
    return np.where(rows >= 0, matrix[np.maximum(rows, 0), column], np.nan)


def _is_null(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def als_scores(pairs: pd.DataFrame, factors: Factors | None) -> np.ndarray:
    """Dot product of user and track embeddings; 0 where either is unknown."""
    return FactorRows.of(factors).scores(pairs)


@dataclass(frozen=True)
class FactorRows:
    """Embedding rows found by id through indexes built once: `Series.map(dict)` converts the whole (catalog-sized)
    dict on every call, which a shard would pay once per block."""

    user_factors: np.ndarray | None
    item_factors: np.ndarray | None
    user_index: pd.Index  # user id -> position in user_rows
    user_rows: np.ndarray
    item_index: pd.Index
    item_rows: np.ndarray

    @classmethod
    def of(cls, factors: Factors | None) -> FactorRows:
        if factors is None:
            return cls(None, None, pd.Index([]), np.zeros(0, dtype=np.int64), pd.Index([]), np.zeros(0, dtype=np.int64))
        user_factors, item_factors, user_row, item_row = factors
        return cls(user_factors, item_factors, pd.Index(list(user_row)), np.fromiter(user_row.values(), dtype=np.int64),
                   pd.Index(list(item_row)), np.fromiter(item_row.values(), dtype=np.int64))

    def scores(self, pairs: pd.DataFrame) -> np.ndarray:
        """Dot product of each pair's user and track embeddings; 0 where either is unknown."""
        out = np.zeros(len(pairs))
        if self.user_factors is None or self.item_factors is None:
            return out
        u = self.user_index.get_indexer(pairs[s.USER_ID])
        t = self.item_index.get_indexer(pairs[s.TRACK_ID])
        ok = (u >= 0) & (t >= 0)
        users, items = self.user_factors[self.user_rows[u[ok]]], self.item_factors[self.item_rows[t[ok]]]
        out[ok] = np.einsum("ij,ij->i", users, items)
        return out


def mark_known(pairs: pd.DataFrame, history: pd.DataFrame, before: pd.Series | pd.Timestamp) -> pd.Series:
    """Whether the user had started the track strictly before `before` (a time per pair, or one time)."""
    first = history.groupby([s.USER_ID, s.TRACK_ID])[s.TS].min().rename("first_ts").reset_index()
    joined = pairs[[s.USER_ID, s.TRACK_ID]].merge(first, on=[s.USER_ID, s.TRACK_ID], how="left")
    cutoff = before.to_numpy() if isinstance(before, pd.Series) else before
    return pd.Series((joined["first_ts"] < cutoff).fillna(False).to_numpy(dtype=bool), index=pairs.index)
