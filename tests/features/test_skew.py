"""The skew gate: suites generated from training frames catch each kind of injected fault, and pass healthy days."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import WorldConfig
from pipeline.features.definitions import track_stats, user_profile, vocabulary, window_days
from pipeline.features.skew import CATEGORICAL, NUMERIC, TRACKS, USERS, freshness_problem, track_frame, user_frame
from pipeline.sim.world import generate_world, history_days
from validation.skew import build_suite, distribution, kl_divergence, validate

pytestmark = pytest.mark.slow  # real training, Great Expectations or fuzzing: seconds per test

Z = 4.0


def world_frames(seed: int, profile_days: int = 5) -> tuple[dict[str, list[pd.DataFrame]], dict[str, pd.DataFrame]]:
    """Daily training frames of a synthetic world, and the frames of the next (serving) day."""
    config = WorldConfig(seed=seed, n_users=300, n_tracks=2000, n_artists=200, history_days=profile_days + 8)
    world = generate_world(config)
    genres = vocabulary(world.catalog, s.GENRE)
    days = history_days(config)
    frames: dict[str, list[pd.DataFrame]] = {USERS: [], TRACKS: []}
    for day in days[-(profile_days + 1):]:
        window = world.events.loc[world.events[s.TS].dt.strftime("%Y-%m-%d").isin(window_days(day, 28))]
        frames[USERS].append(user_frame(user_profile(window, world.catalog, day), genres))
        frames[TRACKS].append(track_frame(track_stats(window, world.catalog, day)))
    serving = {entity: days_[-1] for entity, days_ in frames.items()}
    return {entity: days_[:-1] for entity, days_ in frames.items()}, serving


def suites(training: dict[str, list[pd.DataFrame]]) -> dict[str, object]:
    return {e: build_suite(f"dailymix-{e}", training[e], NUMERIC[e], CATEGORICAL[e], Z) for e in (USERS, TRACKS)}


@pytest.fixture(scope="module")
def world() -> tuple[dict[str, object], dict[str, pd.DataFrame]]:
    training, serving = world_frames(seed=3)
    return suites(training), serving


def run(tmp_path, suite_set, frames) -> list[str]:
    failures, docs = validate(tmp_path / "gx-project", frames, suite_set, "test")
    assert docs.exists(), "Data Docs are written for every validation"
    return [f"{f.batch}.{f.column}" for f in failures]


def test_a_healthy_next_day_passes(tmp_path, world) -> None:
    suite_set, serving = world
    assert run(tmp_path, suite_set, serving) == []


def test_a_unit_bug_is_named(tmp_path, world) -> None:
    suite_set, serving = world
    broken = {**serving, USERS: serving[USERS].assign(completion=serving[USERS]["completion"] / 1000)}  # ms → s
    assert set(run(tmp_path, suite_set, broken)) == {"users.completion"}


def test_a_column_of_nulls_is_named(tmp_path, world) -> None:
    suite_set, serving = world
    broken = {**serving, TRACKS: serving[TRACKS].assign(skip_rate=np.nan)}
    assert set(run(tmp_path, suite_set, broken)) == {"tracks.skip_rate"}


def test_a_shifted_categorical_distribution_is_named(tmp_path, world) -> None:
    suite_set, serving = world
    users = serving[USERS].copy()
    top = users["top_genre"].value_counts().index[0]
    others = users.index[users["top_genre"] != top]
    share = (users["top_genre"] == top).mean()
    flip = others[: int(share * len(users))]  # the leading genre's share doubles
    users.loc[flip, "top_genre"] = top
    assert "users.top_genre" in run(tmp_path, suite_set, {**serving, USERS: users})


def test_a_stale_snapshot_fails_freshness() -> None:
    day = "2026-11-10"
    fresh = pd.Timestamp("2026-11-11", tz="UTC")  # the snapshot of the day itself
    assert freshness_problem(day, fresh, 24) is None
    assert freshness_problem(day, fresh - pd.Timedelta(days=1), 24) is None  # exactly 24 h: allowed
    problem = freshness_problem(day, fresh - pd.Timedelta(days=2), 24)
    assert problem is not None and "48 h old" in problem
    assert "no features" in freshness_problem(day, None, 24)


def test_kl_divergence_known_values() -> None:
    p = np.array([0.5, 0.5])
    assert kl_divergence(p, p) == 0
    assert kl_divergence(np.array([0.75, 0.25]), p) == pytest.approx(0.75 * np.log(1.5) + 0.25 * np.log(0.5))
    smoothed = distribution(pd.Series(["a", "a", "b"]), ["a", "b", "c"])
    np.testing.assert_allclose(smoothed, np.array([2.5, 1.5, 0.5]) / 4.5)


def test_false_alarm_rate_over_twenty_healthy_days(tmp_path) -> None:
    """Fresh worlds (seeds 100..119): the gate, trained on each world's week, passes its next day."""
    passed = 0
    for seed in range(100, 120):
        training, serving = world_frames(seed)
        passed += run(tmp_path / str(seed), suites(training), serving) == []
    assert passed >= 19, f"{20 - passed} false alarms in 20 healthy days"
