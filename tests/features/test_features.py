"""Feature definitions on a hand-built event log: every number is worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.features.definitions import (
    FEATURE_COLUMNS,
    SKIP_PRIOR_STRENGTH,
    TRACK_ROW,
    USER_ROW,
    mark_known,
    pair_features,
    snapshot_timestamp,
    track_stats,
    user_profile,
    user_recent,
    vocabulary,
    window_days,
)

DAY = "2026-11-01"
NEXT_MIDNIGHT = pd.Timestamp("2026-11-02", tz="UTC")


def _utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# --- days ---------------------------------------------------------------------------------------------------------


def test_snapshot_timestamp_is_the_next_utc_midnight() -> None:
    assert snapshot_timestamp(DAY) == NEXT_MIDNIGHT
    assert snapshot_timestamp("2026-12-31") == _utc("2027-01-01")
    assert str(snapshot_timestamp(DAY).tz) == "UTC"


def test_window_days_end_with_the_day_oldest_first() -> None:
    assert window_days("2026-03-02", 3) == ["2026-02-28", "2026-03-01", "2026-03-02"]
    assert window_days("2028-03-01", 2) == ["2028-02-29", "2028-03-01"]
    assert window_days(DAY, 1) == [DAY]


def test_vocabulary_is_sorted_and_distinct(catalog) -> None:
    assert vocabulary(catalog, s.GENRE) == ["jazz", "pop", "rock"]
    assert vocabulary(catalog, s.MOOD) == ["calm", "happy"]


# --- user_profile -------------------------------------------------------------------------------------------------


@pytest.fixture
def profile(events, catalog) -> pd.DataFrame:
    return user_profile(events, catalog, DAY)


def test_user_profile_affinities_are_smoothed_shares_of_completed_plays(profile) -> None:
    assert profile[s.USER_ID].tolist() == [10, 20, 30]
    assert (profile[s.EVENT_TIMESTAMP] == NEXT_MIDNIGHT).all()
    genre = np.vstack(profile["genre_affinity"])  # columns: jazz, pop, rock
    mood = np.vstack(profile["mood_affinity"])  # columns: calm, happy
    assert genre.dtype == np.float32 and mood.dtype == np.float32
    # user 10 completed rock (t1) twice and jazz (t3) once; the skipped t2 does not count: (1, 0, 2) + 0.1 each
    np.testing.assert_allclose(genre[0], np.array([1.1, 0.1, 2.1]) / 3.3, rtol=1e-6)
    np.testing.assert_allclose(mood[0], np.array([3.1, 0.1]) / 3.2, rtol=1e-6)
    # user 20 only skipped: no evidence, so the smoothed shares are uniform
    np.testing.assert_allclose(genre[1], [1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(mood[1], [0.5, 0.5], rtol=1e-6)
    # user 30 completed jazz/calm once
    np.testing.assert_allclose(genre[2], np.array([1.1, 0.1, 0.1]) / 1.3, rtol=1e-6)
    np.testing.assert_allclose(mood[2], np.array([1.1, 0.1]) / 1.2, rtol=1e-6)


def test_user_profile_plays_and_skip_rate_count_every_start(profile) -> None:
    assert profile["plays"].tolist() == [4, 2, 1]
    np.testing.assert_allclose(profile["skip_rate"], [0.25, 1.0, 0.0])


def test_user_profile_when_every_start_was_skipped(events, catalog) -> None:
    skipped_only = events.loc[events[s.SKIPPED]]  # user 10's skip of t2, user 20's two skips of t4
    profile = user_profile(skipped_only, catalog, DAY)
    assert profile[s.USER_ID].tolist() == [10, 20]
    np.testing.assert_allclose(np.vstack(profile["genre_affinity"]), np.full((2, 3), 1 / 3), rtol=1e-6)
    np.testing.assert_allclose(np.vstack(profile["mood_affinity"]), np.full((2, 2), 1 / 2), rtol=1e-6)
    assert profile["plays"].tolist() == [1, 2]
    np.testing.assert_allclose(profile["skip_rate"], [1.0, 1.0])


def test_user_profile_of_no_events_is_empty(events, catalog) -> None:
    empty = user_profile(events.iloc[0:0], catalog, DAY)
    assert empty.empty
    assert list(empty.columns) == [s.USER_ID, s.EVENT_TIMESTAMP, "genre_affinity", "mood_affinity", "plays",
                                   "skip_rate", "completion"]


def test_user_profile_completion_is_the_mean_share_heard_capped_at_one(profile) -> None:
    # user 10: t1 whole twice, 5 s of the 240 s t2, 180 s of the 90 s t3 (capped at 1); user 20: 5 s of 200 s twice
    np.testing.assert_allclose(profile["completion"], [(3 + 5_000 / 240_000) / 4, 5_000 / 200_000, 1.0], rtol=1e-6)


# --- track_stats --------------------------------------------------------------------------------------------------


def test_track_skip_rate_is_shrunk_toward_the_global_rate(events, catalog) -> None:
    stats = track_stats(events, catalog, DAY)
    assert stats[s.TRACK_ID].tolist() == [1, 2, 3, 4, 5]  # every catalog track, in catalog order
    assert (stats[s.EVENT_TIMESTAMP] == NEXT_MIDNIGHT).all()
    assert stats["plays"].tolist() == [2, 1, 2, 2, 0]
    assert SKIP_PRIOR_STRENGTH == 5.0
    g = 3 / 7  # 3 skips in 7 starts
    expected = [
        (0 + 5 * g) / (2 + 5),  # t1: 2 plays, 0 skips → 15/49
        (1 + 5 * g) / (1 + 5),  # t2: 1 play, 1 skip → 11/21
        (0 + 5 * g) / (2 + 5),  # t3 → 15/49
        (2 + 5 * g) / (2 + 5),  # t4: 2 skips → 29/49
        g,  # t5: never played → the global rate
    ]
    np.testing.assert_allclose(expected, [15 / 49, 11 / 21, 15 / 49, 29 / 49, 3 / 7])
    np.testing.assert_allclose(stats["skip_rate"], expected, rtol=1e-6)


def test_track_stats_without_events(events, catalog) -> None:
    stats = track_stats(events.iloc[0:0], catalog, DAY)
    assert stats["plays"].tolist() == [0] * 5
    np.testing.assert_allclose(stats["skip_rate"], 0.5)


# --- user_recent --------------------------------------------------------------------------------------------------


@pytest.fixture
def recent_events(events_factory) -> pd.DataFrame:
    """User 10: 12 starts on DAY at hours 0..11 (track 100 + hour, skipped on odd hours), logged out of order,
    plus one the evening before and one the next morning. User 20: two starts."""
    hours = [7, 0, 11, 3, 9, 1, 5, 2, 10, 4, 8, 6]
    rows = [(10, 100 + h, f"{DAY}T{h:02d}:30:00", h % 2 == 1) for h in hours]
    rows += [
        (10, 999, "2026-10-31T23:59:59", False),
        (10, 998, "2026-11-02T00:00:00", False),
        (20, 7, f"{DAY}T20:00:00", True),
        (20, 6, f"{DAY}T19:00:00", False),
    ]
    return events_factory(rows)


def test_user_recent_keeps_the_days_last_ten_in_order(recent_events) -> None:
    recent = user_recent(recent_events, DAY)
    assert list(recent.columns) == [s.USER_ID, s.EVENT_TIMESTAMP, "last_track_ids", "last_skipped", "last_ts"]
    assert recent[s.USER_ID].tolist() == [10, 20]
    assert recent["last_track_ids"].iloc[0].tolist() == [100 + h for h in range(2, 12)]
    assert recent["last_skipped"].iloc[0].tolist() == [h % 2 for h in range(2, 12)]
    assert recent["last_track_ids"].iloc[1].tolist() == [6, 7]
    assert recent["last_skipped"].iloc[1].tolist() == [0, 1]
    assert recent["last_ts"].iloc[1].tolist() == [_utc(f"{DAY}T{h}:00:00").value // 10**6 for h in (19, 20)]
    assert pd.Timestamp(recent[s.EVENT_TIMESTAMP].iloc[0]) == _utc(f"{DAY}T11:30:00")
    assert pd.Timestamp(recent[s.EVENT_TIMESTAMP].iloc[1]) == _utc(f"{DAY}T20:00:00")


def test_user_recent_honours_n_and_empty_days(recent_events) -> None:
    assert user_recent(recent_events, DAY, n=3)["last_track_ids"].iloc[0].tolist() == [109, 110, 111]
    assert user_recent(recent_events, "2026-11-05").empty


# --- mark_known ---------------------------------------------------------------------------------------------------


@pytest.fixture
def known_pairs() -> pd.DataFrame:
    return pd.DataFrame({s.USER_ID: [10, 10, 10, 10, 20], s.TRACK_ID: [1, 1, 2, 5, 1]}, index=[50, 51, 52, 53, 54])


def test_mark_known_with_a_cutoff_per_pair(known_pairs, events) -> None:
    # user 10 first started t1 at 08:00 and t2 at 10:00; never t5; user 20 never started t1
    cutoffs = pd.Series(
        [_utc(f"{DAY}T08:00:00"), _utc(f"{DAY}T08:00:01"), NEXT_MIDNIGHT, NEXT_MIDNIGHT, NEXT_MIDNIGHT],
        index=known_pairs.index,
    )
    known = mark_known(known_pairs, events, cutoffs)
    assert known.index.tolist() == [50, 51, 52, 53, 54]
    assert known.tolist() == [False, True, True, False, False]  # strictly before: 08:00 is not before 08:00


def test_mark_known_with_one_cutoff(known_pairs, events) -> None:
    assert mark_known(known_pairs, events, _utc(f"{DAY}T09:30:00")).tolist() == [True, True, False, False, False]
    assert not mark_known(known_pairs, events.iloc[0:0], NEXT_MIDNIGHT).any()


# --- pair_features ------------------------------------------------------------------------------------------------


@pytest.fixture
def feature_inputs(events, catalog) -> tuple[pd.DataFrame, pd.DataFrame, tuple]:
    profiles = user_profile(events, catalog, DAY).to_dict("records")  # users 10, 20, 30
    no_profile = {s.USER_ID: 99, "genre_affinity": None, "mood_affinity": None, "plays": None, "skip_rate": None,
                  "completion": None}
    users = pd.DataFrame([*profiles, no_profile])  # user 99 at row 3: the nulls Feast returns for an unknown user
    tracks = track_stats(events, catalog, DAY)  # rows: tracks 1..5
    user_factors = np.array([[1.0, 2.0], [0.5, -1.0]], dtype=np.float32)  # users 10, 30
    item_factors = np.array([[1.0, 0.0], [3.0, 1.0], [-2.0, 4.0]], dtype=np.float32)  # tracks 1, 2, 3
    factors = (user_factors, item_factors, {10: 0, 30: 1}, {1: 0, 2: 1, 3: 2})
    return users, tracks, factors


def test_pair_features_known_values(feature_inputs, catalog) -> None:
    users, tracks, factors = feature_inputs
    pairs = pd.DataFrame({
        s.USER_ID: [10, 30, 99, 10],
        s.TRACK_ID: [2, 3, 1, 4],
        "known": [True, False, False, False],
        USER_ROW: [0, 2, 3, 0],
        TRACK_ROW: [1, 2, 0, 3],
    })
    features = pair_features(pairs, users, tracks, catalog, factors, DAY)
    assert list(features.columns) == list(FEATURE_COLUMNS)
    nan = np.nan
    expected = {
        # t2 rock/happy for user 10; t3 jazz/calm for user 30; user 99 has no profile; t4 pop/happy for user 10
        "genre_affinity": [2.1 / 3.3, 1.1 / 1.3, nan, 0.1 / 3.3],
        "mood_affinity": [0.1 / 3.2, 1.1 / 1.2, nan, 0.1 / 3.2],
        "user_log_plays": [np.log1p(4), np.log1p(1), nan, np.log1p(4)],
        "user_skip_rate": [0.25, 0.0, nan, 0.25],
        "user_completion": [(3 + 5_000 / 240_000) / 4, 1.0, nan, (3 + 5_000 / 240_000) / 4],
        "track_log_plays": [np.log1p(1), np.log1p(2), np.log1p(2), np.log1p(2)],
        "track_skip_rate": [11 / 21, 15 / 49, 15 / 49, 29 / 49],
        # day - release: 2020-01-01 → 2496 days, same day → 0, 2016-11-01 → 3652 days, 2025-11-01 → 365 days
        "track_age_years": [2496 / 365, 0.0, 3652 / 365, 1.0],
        "duration_min": [4.0, 1.5, 3.0, 200_000 / 60_000],
        # (1, 2)·(3, 1) = 5; (0.5, -1)·(-2, 4) = -5; user 99 has no vector → 0; track 4 has no vector → 0
        "als_score": [5.0, -5.0, 0.0, 0.0],
        "known": [1.0, 0.0, 0.0, 0.0],
    }
    for column, values in expected.items():
        np.testing.assert_allclose(features[column].to_numpy(dtype=float), values, rtol=1e-6, err_msg=column)


def test_pair_features_without_factors_score_zero(feature_inputs, catalog) -> None:
    users, tracks, _ = feature_inputs
    pairs = pd.DataFrame({s.USER_ID: [10], s.TRACK_ID: [1], "known": [True], USER_ROW: [0], TRACK_ROW: [0]})
    features = pair_features(pairs, users, tracks, catalog, None, DAY)
    assert features["als_score"].tolist() == [0.0]
    assert features["genre_affinity"].iloc[0] == pytest.approx(2.1 / 3.3, rel=1e-6)


def test_pair_features_user_row_minus_one_means_no_profile(feature_inputs, catalog) -> None:
    """A pair whose user has no feature row (USER_ROW -1) gets the no-profile NaNs, not the last row's values."""
    users, tracks, factors = feature_inputs
    pairs = pd.DataFrame({s.USER_ID: [77, 77], s.TRACK_ID: [2, 3], "known": [False, False], USER_ROW: [-1, -1],
                          TRACK_ROW: [1, 2]})
    features = pair_features(pairs, users.iloc[:3], tracks, catalog, factors, DAY)  # last row: a real profile
    for column in ("genre_affinity", "mood_affinity", "user_log_plays", "user_skip_rate", "user_completion"):
        assert features[column].isna().all(), column
    assert features["track_log_plays"].notna().all()
