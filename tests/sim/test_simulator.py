"""Known answers for the simulated listeners: expressed affinity drives skips, position, fatigue and satiation push
them up, sessions choose mixes by a logit, a share of starts is organic, the same seed gives the same events, and
the events pass the normal ingest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import ListenerConfig, WorldConfig
from pipeline.core.paths import Layout
from pipeline.data.ingest import ingest_file
from pipeline.sim.listeners import Listeners, play_probability
from pipeline.sim.world import N_PLAYS_PER_DAY, World, generate_world, skip_probability, write_world

WORLD = WorldConfig(n_users=20, n_tracks=2000, n_artists=100, history_days=2)
# Only ground truth and knowing the track: no position or fatigue effect, every mix chosen equally often, no organic
# starts, tastes that do not move within a week.
FLAT = ListenerConfig(position_penalty=0.0, fatigue_per_play=0.0, mix_preference=0.0, organic_share=0.0,
                      familiarity_gain=0.0)
MIX_ONLY = ListenerConfig(organic_share=0.0)
DAYS = [f"2026-11-{d:02d}" for d in range(1, 21)]


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WORLD)


def _active(world: World, k: int) -> list[int]:
    """The k most active listeners (most starts per day), so a few simulated days give many events."""
    return world.users.sort_values(N_PLAYS_PER_DAY, ascending=False)[s.USER_ID].head(k).tolist()


def _slots(world: World, user: int, tracks: np.ndarray, discovery: bool = False) -> pd.DataFrame:
    n = len(tracks)
    return pd.DataFrame({
        s.USER_ID: user, s.MIX_INDEX: 0, s.POSITION: np.arange(n), s.TRACK_ID: tracks,
        s.MIX_ID: f"2026-10-31:{user}:0", s.DISCOVERY: discovery,
        s.POLICY: s.POLICY_EXPLOIT, s.PROPENSITY: 1.0,
    })


def _tracks_with_affinity(world: World, user: int, low: float, high: float, n: int = 30, seed: int = 0) -> np.ndarray:
    """Up to n tracks whose expressed affinity at the start, for the user of listeners seeded `seed`, lies in
    [low, high]."""
    tracks = world.catalog[s.TRACK_ID].to_numpy()
    scores = Listeners(world, FLAT, seed=seed).expressed_affinity(np.full(len(tracks), user), tracks)
    chosen = tracks[(scores >= low - 1e-12) & (scores <= high + 1e-12)][:n]
    assert len(chosen) >= 10, f"world has too few tracks of affinity in [{low}, {high}] for user {user}"
    return chosen


def test_play_probability_known_values() -> None:
    config = ListenerConfig()
    # affinity 1, known, top position, never heard recently: world skip 0.15 - familiarity 0.10
    assert play_probability(np.array([1.0]), np.array([0]), np.array([30]), np.array([True]), np.array([0]),
                            config)[0] == pytest.approx(1 - (skip_probability(np.array([1.0]))[0] - 0.10))
    # affinity 0, new, last position, heard 20 times: 0.65 + 0.05 + 0.15 + min(0.6, 0.3) → clipped at 0.98
    assert play_probability(np.array([0.0]), np.array([29]), np.array([30]), np.array([False]), np.array([20]),
                            config)[0] == pytest.approx(0.02)


def test_play_probability_monotone_in_position_affinity_and_fatigue() -> None:
    config = ListenerConfig()
    positions = np.arange(30)
    by_position = play_probability(np.full(30, 0.6), positions, np.full(30, 30), np.ones(30, bool), np.zeros(30),
                                   config)
    assert np.all(np.diff(by_position) < 0)
    affinities = np.linspace(0, 1, 11)
    by_affinity = play_probability(affinities, np.zeros(11), np.full(11, 30), np.ones(11, bool), np.zeros(11), config)
    assert np.all(np.diff(by_affinity) > 0)
    fatigue = play_probability(np.full(5, 0.8), np.zeros(5), np.full(5, 30), np.ones(5, bool), np.arange(5), config)
    assert np.all(np.diff(fatigue) < 0)
    familiar, new = play_probability(np.full(2, 0.5), np.zeros(2), np.full(2, 30), np.array([True, False]),
                                     np.zeros(2), config)
    assert familiar > new


def test_expressed_affinity_high_vs_low_drives_skips(world: World) -> None:
    user = _active(world, 1)[0]
    loved = _slots(world, user, _tracks_with_affinity(world, user, 0.9, 1.0, seed=3))
    foreign = _slots(world, user, _tracks_with_affinity(world, user, 0.0, 0.06, seed=3)).assign(**{s.MIX_INDEX: 1})
    slots = pd.concat([loved, foreign], ignore_index=True).assign(
        **{s.MIX_ID: lambda f: f"2026-10-31:{user}:" + f[s.MIX_INDEX].astype(str)})
    listeners = Listeners(world, FLAT, seed=3)
    events = pd.concat([listeners.listen(slots, day) for day in DAYS], ignore_index=True)
    loved_ids = set(loved[s.TRACK_ID])
    on_loved = events[s.TRACK_ID].isin(loved_ids).to_numpy()
    assert on_loved.sum() > 100 and (~on_loved).sum() > 100
    # Known tracks, no position or fatigue effect: skip = world skip(expressed affinity) − familiarity 0.10,
    # i.e. 0.52-0.55 at affinity 0-0.06 and at most 0.10 at affinity ≥ 0.9.
    affinity = listeners.expressed_affinity(events[s.USER_ID].to_numpy(), events[s.TRACK_ID].to_numpy())
    expected_skip = skip_probability(affinity) - 0.10
    assert expected_skip[~on_loved].min() >= 0.52 - 1e-9 and expected_skip[on_loved].max() <= 0.10 + 1e-9
    for mask in (on_loved, ~on_loved):
        expected = expected_skip[mask].mean()
        observed = events.loc[mask, s.SKIPPED].mean()
        tolerance = 4 * np.sqrt(expected * (1 - expected) / mask.sum())
        assert abs(observed - expected) < tolerance, (observed, expected)


@pytest.mark.parametrize("preference", [0.0, 2.0, 5.0])
def test_sessions_choose_mixes_by_a_logit_on_liking(world: World, preference: float) -> None:
    # A loved mix (expressed affinity 0.9-1) and a foreign one (0-0.06): a session starts at position 0, so the share
    # of position-0 starts on the loved mix estimates P(choose it) = e^(k l_loved) / (e^(k l_loved) + e^(k l_foreign)),
    # l = mean head affinity, k = preference: 1/2 when k is 0. Binomial band: 4 standard errors (+ one session).
    user = _active(world, 1)[0]
    loved = _slots(world, user, _tracks_with_affinity(world, user, 0.9, 1.0, seed=5))
    foreign = _slots(world, user, _tracks_with_affinity(world, user, 0.0, 0.06, seed=5)).assign(**{s.MIX_INDEX: 1})
    slots = pd.concat([loved, foreign], ignore_index=True).assign(
        **{s.MIX_ID: lambda f: f"2026-10-31:{user}:" + f[s.MIX_INDEX].astype(str)})
    config = FLAT.model_copy(update={"mix_preference": preference})
    listeners = Listeners(world, config, seed=5)
    sessions = pd.concat([listeners.listen(slots, day) for day in DAYS], ignore_index=True).query("position == 0")
    liked, foreign_liked = (listeners.expressed_affinity(np.full(10, user), mix[s.TRACK_ID].to_numpy()[:10]).mean()
                            for mix in (loved, foreign))
    expected = 1 / (1 + np.exp(preference * (foreign_liked - liked)))
    observed = sessions[s.TRACK_ID].isin(set(loved[s.TRACK_ID])).mean()
    assert len(sessions) > 100
    assert abs(observed - expected) <= 4 * np.sqrt(expected * (1 - expected) / len(sessions)) + 1 / len(sessions)


def test_later_positions_are_skipped_more_and_started_less(world: World) -> None:
    user = _active(world, 2)[1]
    slots = _slots(world, user, _tracks_with_affinity(world, user, 0.9, 1.0)[:30])
    config = MIX_ONLY.model_copy(update={"position_penalty": 0.5, "fatigue_per_play": 0.0})
    events = pd.concat([Listeners(world, config, seed=5).listen(slots, day) for day in DAYS], ignore_index=True)
    position = events[s.POSITION].astype(int)
    top, bottom = events.loc[position < 10], events.loc[position >= len(slots) // 2]
    assert len(top) > len(bottom)  # sessions start at the top
    assert top[s.SKIPPED].mean() < bottom[s.SKIPPED].mean()


def test_fatigue_raises_skips_across_days(world: World) -> None:
    user = _active(world, 3)[2]
    slots = _slots(world, user, _tracks_with_affinity(world, user, 0.9, 1.0)[:10])
    config = MIX_ONLY.model_copy(update={"position_penalty": 0.0, "fatigue_per_play": 0.1, "fatigue_cap": 0.6})
    listeners = Listeners(world, config, seed=5)
    days = [listeners.listen(slots, day) for day in DAYS]
    first, last = days[0], pd.concat(days[-5:])
    assert first[s.SKIPPED].mean() < last[s.SKIPPED].mean()


def test_same_seed_same_events_and_slot_fields_copied(world: World) -> None:
    slots = pd.concat([_slots(world, u, _tracks_with_affinity(world, u, 0.9, 1.0)[:20]).assign(
        **{s.POLICY: np.where(np.arange(20) % 5 == 0, s.POLICY_EXPLORE, s.POLICY_EXPLOIT),
           s.PROPENSITY: np.where(np.arange(20) % 5 == 0, 0.02, 1.0)}) for u in _active(world, 5)], ignore_index=True)
    runs = [[Listeners(world, MIX_ONLY, seed=11).listen(slots, day) for day in DAYS[:3]] for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    other = Listeners(world, MIX_ONLY, seed=12).listen(slots, DAYS[0])
    assert not other.equals(runs[0][0])
    events = runs[0][0]
    assert list(events.columns) == list(s.EVENT_COLUMNS)
    assert events.dtypes.astype(str).to_dict() == s.EVENT_DTYPES
    keyed = events.merge(slots, on=[s.USER_ID, s.TRACK_ID], suffixes=("", "_slot"))
    assert len(keyed) == len(events)
    for column in (s.MIX_ID, s.POSITION, s.POLICY, s.PROPENSITY):
        assert (keyed[column].astype(str) == keyed[f"{column}_slot"].astype(str)).all(), column


def test_events_pass_the_normal_ingest(world: World, tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    write_world(world, layout)
    slots = pd.concat([_slots(world, u, _tracks_with_affinity(world, u, 0.9, 1.0)[:20]) for u in _active(world, 5)],
                      ignore_index=True)
    day = "2026-11-01"
    events = Listeners(world, ListenerConfig(), seed=1).listen(slots, day)
    assert (events[s.POLICY] == s.POLICY_ORGANIC).any() and (events[s.POLICY] == s.POLICY_EXPLOIT).any()
    source = tmp_path / "events.parquet"
    events.to_parquet(source, index=False)
    report = ingest_file(source, day, layout, world.catalog, max_bad_row_share=0.0)
    assert report.rows_read == len(events) > 0
    assert report.quarantined == 0 and report.accepted == len(events)
