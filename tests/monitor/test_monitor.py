"""Loop health: entropy, publication and engagement metrics, and the drift alerts built on them."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.alerts import read_alerts
from pipeline.core.config import MonitorConfig, Settings
from pipeline.monitor.health import (
    baseline_days,
    check_drift,
    drift_alerts,
    engagement_metrics,
    entropy,
    gini,
    publication_metrics,
    store_metrics,
)


@pytest.mark.parametrize(
    ("labels", "bits"),
    [
        (["a", "b", "c", "d"], 2.0),
        (["a", "b", "c", "d"] * 5, 2.0),
        (["a"] * 7, 0.0),
        (["a", "a", "b", "b"], 1.0),
        (["a", "a", "a", "b"], -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))),
        ([], 0.0),
    ],
)
def test_entropy_in_bits(labels: list[str], bits: float) -> None:
    assert entropy(pd.Series(labels, dtype=object)) == pytest.approx(bits)


@pytest.fixture
def slots() -> pd.DataFrame:
    """User 1: mix 0 (rock, rock, jazz, jazz), mix 1 (pop, pop); user 2: mix 0 (rock, jazz, pop, metal)."""
    rows = [  # user, mix, track, genre, discovery, policy
        (1, 0, 1, "rock", True, s.POLICY_EXPLOIT),
        (1, 0, 2, "rock", False, s.POLICY_EXPLORE),
        (1, 0, 3, "jazz", False, s.POLICY_EXPLOIT),
        (1, 0, 4, "jazz", False, s.POLICY_EXPLOIT),
        (1, 1, 5, "pop", True, s.POLICY_EXPLOIT),
        (1, 1, 6, "pop", True, s.POLICY_EXPLOIT),
        (2, 0, 1, "rock", False, s.POLICY_EXPLORE),
        (2, 0, 2, "jazz", False, s.POLICY_EXPLOIT),
        (2, 0, 7, "pop", False, s.POLICY_EXPLOIT),
        (2, 0, 8, "metal", False, s.POLICY_EXPLOIT),
    ]
    return pd.DataFrame(rows, columns=[s.USER_ID, s.MIX_INDEX, s.TRACK_ID, s.GENRE, s.DISCOVERY, s.POLICY])


def test_publication_metrics_known_values(slots: pd.DataFrame) -> None:
    metrics = publication_metrics(slots, catalog_size=100)
    expected = {
        "users": 2,
        "mixes": 3,
        "slots": 10,
        "mixes_per_user": 1.5,
        "tracks_per_mix": 10 / 3,
        "discovery_share": 0.3,
        "explore_share": 0.2,
        # rock 3, jazz 3, pop 3, metal 1 of 10
        "global_genre_entropy": -(3 * 0.3 * np.log2(0.3) + 0.1 * np.log2(0.1)),
        # per mix: 1 bit, 0 bits, 2 bits
        "mean_mix_genre_entropy": 1.0,
        # user 1: rock/jazz/pop 2 each → log2 3; user 2: four genres once each → 2 bits
        "user_genre_entropy": (np.log2(3) + 2.0) / 2,
        "coverage": 0.08,  # tracks 1..8
        # exposures over 100 tracks: tracks 1, 2 twice, 3..8 once, 92 never
        "exposure_gini": gini(np.r_[[2, 2], np.ones(6), np.zeros(92)]),
    }
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value), name
    assert isinstance(metrics["users"], int) and isinstance(metrics["mixes"], int)


def test_publication_metrics_of_nothing_published(slots: pd.DataFrame) -> None:
    assert publication_metrics(slots.iloc[0:0], catalog_size=100) == {"users": 0, "mixes": 0, "slots": 0}


def test_engagement_metrics_per_policy(events_factory) -> None:
    events = events_factory([
        (1, 1, "2026-11-01T01:00:00", False),
        (1, 2, "2026-11-01T02:00:00", True),
        (1, 3, "2026-11-01T03:00:00", False),
        (1, 4, "2026-11-01T04:00:00", False),
        (2, 5, "2026-11-01T05:00:00", True),
        (2, 6, "2026-11-01T06:00:00", True),
    ])
    events[s.POLICY] = pd.array([s.POLICY_EXPLOIT] * 4 + [s.POLICY_ORGANIC] * 2, dtype="string")
    assert engagement_metrics(events) == {
        "events": 6,
        "skip_rate": 0.5,
        "skip_rate_exploit": 0.25,
        "skip_rate_explore": None,  # no explore events that day
        "skip_rate_organic": 1.0,
        "skip_rate_discovery": None,  # not joined to the published slots
        "skip_rate_familiar": None,
    }


def test_engagement_metrics_of_a_day_without_events(events_factory) -> None:
    empty = events_factory([]).iloc[0:0]
    assert engagement_metrics(empty) == {"events": 0, "skip_rate": None, "skip_rate_exploit": None,
                                         "skip_rate_explore": None, "skip_rate_organic": None,
                                         "skip_rate_discovery": None, "skip_rate_familiar": None}


@pytest.mark.parametrize(
    ("counts", "expected"),
    [([5, 5, 5, 5], 0.0), ([0, 0, 0, 10], 0.75), ([], 0.0), ([0, 0], 0.0), ([1, 3], 0.25)],
)
def test_gini_known_values(counts: list[int], expected: float) -> None:
    assert gini(np.array(counts)) == pytest.approx(expected)


def test_engagement_splits_discovery_and_familiar_through_the_slots(events_factory) -> None:
    events = events_factory([
        (1, 1, "2026-11-01T01:00:00", True),
        (1, 2, "2026-11-01T02:00:00", False),
        (1, 3, "2026-11-01T03:00:00", True),
        (1, 4, "2026-11-01T04:00:00", False),
    ])
    events[s.POLICY] = pd.array([s.POLICY_EXPLOIT] * 4, dtype="string")
    events[s.MIX_ID] = pd.array(["2026-10-31:1:0"] * 4, dtype="string")
    events[s.POSITION] = pd.array([0, 1, 2, 3], dtype="Int64")
    slots = pd.DataFrame({s.MIX_ID: "2026-10-31:1:0", s.POSITION: [0, 1, 2, 3],
                          s.DISCOVERY: [True, True, True, False]})
    metrics = engagement_metrics(events, slots)
    assert metrics["skip_rate_discovery"] == pytest.approx(2 / 3)
    assert metrics["skip_rate_familiar"] == 0.0


# --- drift --------------------------------------------------------------------------------------------------------

BASE = {"global_genre_entropy": 3.0, "user_genre_entropy": 2.0, "skip_rate": 0.30}
CONFIG = MonitorConfig()


@pytest.fixture
def history() -> pd.DataFrame:
    """Four previous weekly values; the median is the baseline (one outlier does not move it)."""
    rows = [dict(BASE) for _ in range(4)]
    rows[0] = {"global_genre_entropy": 9.0, "user_genre_entropy": 9.0, "skip_rate": 0.0}
    return pd.DataFrame([{"date": d, **row} for d, row in zip(baseline_days("2026-11-29", 4), rows, strict=True)])


def test_baseline_days_are_the_same_weekday_in_previous_weeks() -> None:
    assert baseline_days("2026-11-29", 4) == ["2026-11-22", "2026-11-15", "2026-11-08", "2026-11-01"]


def test_no_alerts_without_history() -> None:
    today = {"global_genre_entropy": 0.1, "user_genre_entropy": 0.1, "skip_rate": 0.99}
    assert drift_alerts(today, pd.DataFrame(), CONFIG) == []
    assert drift_alerts(today, pd.DataFrame([BASE]), CONFIG.model_copy(update={"min_baseline_weeks": 2})) == []


def test_no_alerts_for_a_steady_day(history: pd.DataFrame) -> None:
    assert drift_alerts(dict(BASE), history, CONFIG) == []


def test_entropy_drop_of_twenty_percent_alerts(history: pd.DataFrame) -> None:
    alerts = drift_alerts({**BASE, "global_genre_entropy": 2.4}, history, CONFIG)
    assert alerts == ["global_genre_entropy 2.400 is 20.0% below its baseline 3.000 (median of 4 weekly values; "
                      "threshold 10%)"]
    alerts = drift_alerts({**BASE, "global_genre_entropy": 2.4, "user_genre_entropy": 1.6}, history, CONFIG)
    assert [a.split()[0] for a in alerts] == ["global_genre_entropy", "user_genre_entropy"]


def test_skip_rate_rise_of_five_points_alerts(history: pd.DataFrame) -> None:
    alerts = drift_alerts({**BASE, "skip_rate": 0.35}, history, CONFIG)
    assert alerts == ["skip_rate 0.350 is 5.0 pp above its baseline 0.300 (median of 4 weekly values; "
                      "threshold 3 pp)"]


def test_thresholds_and_watched_entropies_come_from_the_config(history: pd.DataFrame) -> None:
    loose = CONFIG.model_copy(update={"entropy_drop": 0.25, "skip_rise": 0.10})
    assert drift_alerts({**BASE, "global_genre_entropy": 2.4, "skip_rate": 0.35}, history, loose) == []
    global_only = CONFIG.model_copy(update={"entropy_metrics": ("global_genre_entropy",)})
    assert drift_alerts({**BASE, "user_genre_entropy": 1.0}, history, global_only) == []


@pytest.mark.parametrize(
    "change",
    [
        {"global_genre_entropy": 2.85},  # -5%
        {"user_genre_entropy": 1.9},  # -5%
        {"mean_mix_genre_entropy": 0.5},  # per-mix coherence is not narrowing: not alerted
        {"global_genre_entropy": 3.6},  # rises are fine
        {"skip_rate": 0.32},  # +2 points
        {"skip_rate": 0.10},  # falls are fine
    ],
)
def test_small_changes_do_not_alert(history: pd.DataFrame, change: dict) -> None:
    assert drift_alerts({**BASE, **change}, history, CONFIG) == []


def test_drift_tolerates_weeks_without_engagement(history: pd.DataFrame) -> None:
    # weeks without events store skip_rate None; the baseline is the median of the weeks that have one
    history["skip_rate"] = [None, 0.2, 0.2, 0.25]
    assert drift_alerts({**BASE, "skip_rate": 0.30}, history, CONFIG) == [
        "skip_rate 0.300 is 10.0 pp above its baseline 0.200 (median of 4 weekly values; threshold 3 pp)"
    ]
    assert drift_alerts({**BASE, "skip_rate": None}, history, CONFIG) == []
    history["skip_rate"] = None
    assert drift_alerts({**BASE, "skip_rate": 0.9}, history, CONFIG) == []


# --- the long-horizon baseline --------------------------------------------------------------------------------------


def _store_weekly(settings: Settings, first: str, values: list[float]) -> list[str]:
    """Store a health row per week from `first` with these per-user entropies (everything else steady)."""
    days = [(date.fromisoformat(first) + timedelta(days=7 * week)).isoformat() for week in range(len(values))]
    for day, value in zip(days, values, strict=True):
        store_metrics(settings, day, {"date": day, **BASE, "user_genre_entropy": value})
    return days


def test_a_slow_narrowing_is_caught_by_the_long_horizon_only(tmp_path: Path) -> None:
    # Per-user entropy falls 3% a week: against the trailing 4-week median (which falls with it) every week is
    # 3-7.3% down, never the 10% the rule needs; against the median of 5-8 weeks back it is 10% down by week 6
    # (week 1 = 2.0, week 6 = 2.0 * 0.97^5 = 1.717, 14.1% below), so from week 6 on the alert names that baseline.
    settings = Settings(home=tmp_path)
    days = _store_weekly(settings, "2026-11-01", [2.0 * 0.97 ** week for week in range(10)])
    alerts = {day: check_drift(settings, day) for day in days}
    assert [bool(alerts[d]) for d in days] == [False] * 5 + [True] * 5
    assert alerts[days[5]] == ["user_genre_entropy 1.717 is 14.1% below its long-horizon baseline 2.000 (median of 1 "
                               "weekly values; threshold 10%)"]
    assert read_alerts(settings, days[5], "monitor") == alerts[days[5]]
    trailing_only = settings.model_copy(update={"monitor": MonitorConfig(long_baseline_weeks=0)})
    assert not any(check_drift(trailing_only, day) for day in days)


def test_one_alert_per_entropy_when_both_baselines_see_the_drop(history: pd.DataFrame) -> None:
    alerts = drift_alerts({**BASE, "user_genre_entropy": 1.0}, history, CONFIG, long_baseline=history)
    assert alerts == ["user_genre_entropy 1.000 is 50.0% below its baseline 2.000 (median of 4 weekly values; "
                      "threshold 10%)"]


def test_the_long_baseline_must_reach_further_back_than_the_trailing_one() -> None:
    with pytest.raises(ValueError, match="long_baseline_weeks"):
        MonitorConfig(baseline_weeks=4, long_baseline_weeks=4)
    assert MonitorConfig(long_baseline_weeks=0).long_baseline_weeks == 0
