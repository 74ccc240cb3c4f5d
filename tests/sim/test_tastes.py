"""Known answers for listeners whose tastes move: latent tastes, familiarity (mere exposure), habit, organic choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import ListenerConfig, WorldConfig
from pipeline.sim.listeners import Listeners
from pipeline.sim.tastes import LIKED_RANGE, LOW_RANGE, MovingTastes
from pipeline.sim.world import World, generate_world, true_affinity

WORLD = WorldConfig(n_users=200, n_tracks=1500, n_artists=150, history_days=3)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WORLD)


def _all_pairs(world: World) -> tuple[np.ndarray, np.ndarray]:
    users = world.users[s.USER_ID].to_numpy()
    tracks = world.catalog[s.TRACK_ID].to_numpy()
    return np.repeat(users, len(tracks)), np.tile(tracks, len(users))


def _taste_genre(world: World, tastes: MovingTastes) -> np.ndarray:
    """Per (user, catalog track) pair: whether the track's genre is one of the user's taste genres."""
    users, tracks = _all_pairs(world)
    user_rows, track_rows = tastes.rows(users, tracks)
    return tastes.weight[user_rows, tastes.track_genre[track_rows]] > 0


def test_taste_genres_keep_the_worlds_affinity(world: World) -> None:
    # Familiarity 1 and unchanged weights: expressed affinity is the world's true affinity wherever it is positive,
    # so exploitation slots skip as often as under the fixed-taste world.
    tastes = MovingTastes(world, ListenerConfig(), seed=1)
    users, tracks = _all_pairs(world)
    truth = true_affinity(world.tastes, world.catalog, users, tracks)
    expressed = tastes.expressed_for(users, tracks)
    in_taste = _taste_genre(world, tastes)
    np.testing.assert_allclose(expressed[in_taste], truth[in_taste], atol=1e-12)
    assert (truth[~in_taste] == 0).all()


def test_every_genre_is_liked_somewhat_and_a_share_q_is_latent_liked(world: World) -> None:
    config = ListenerConfig(latent_like_prob=0.3)
    tastes = MovingTastes(world, config, seed=1)
    outside = tastes.weight == 0
    liked, hidden = tastes.latent_liked, tastes.hidden
    assert not (liked & ~outside).any()
    assert (hidden[outside] > 0).all()
    assert ((hidden[liked] >= LIKED_RANGE[0]) & (hidden[liked] <= LIKED_RANGE[1])).all()
    low = outside & ~liked
    assert ((hidden[low] >= LOW_RANGE[0]) & (hidden[low] <= LOW_RANGE[1])).all()
    n = int(outside.sum())
    share = liked[outside].mean()
    assert abs(share - 0.3) <= 4 * np.sqrt(0.3 * 0.7 / n), (share, n)
    # outside the taste genres, latent affinity is the drawn one and familiarity starts at φ
    assert np.allclose(tastes.familiarity[outside], config.unfamiliar_familiarity)
    assert np.allclose(tastes.familiarity[~outside], 1.0)


def test_history_holds_no_play_of_a_latent_liked_genre(world: World) -> None:
    listeners = Listeners(world, ListenerConfig(), seed=1)
    tastes = listeners.tastes
    user_rows, track_rows = tastes.rows(world.events[s.USER_ID].to_numpy(), world.events[s.TRACK_ID].to_numpy())
    hidden_plays = tastes.latent_liked[user_rows, tastes.track_genre[track_rows]]
    assert hidden_plays.sum() > 0  # the generated history has chance plays of those genres...
    kept_users, kept_tracks = tastes.rows(listeners.world.events[s.USER_ID], listeners.world.events[s.TRACK_ID])
    assert not tastes.latent_liked[kept_users, tastes.track_genre[kept_tracks]].any()  # ...the listeners' has none
    assert len(listeners.world.events) == len(world.events) - hidden_plays.sum()


def test_familiarity_rises_with_completed_plays_and_fades_without(world: World) -> None:
    config = ListenerConfig(familiarity_gain=0.1, familiarity_decay=0.2, unfamiliar_familiarity=0.3, habit_rate=0.0)
    tastes = MovingTastes(world, config, seed=1)
    user = 0
    genres = np.flatnonzero(tastes.weight[user] == 0)
    new_genre, idle_genre = genres[0], genres[1]
    taste_genre = int(np.argmax(tastes.weight[user]))
    track = np.flatnonzero(tastes.track_genre == new_genre)[0]
    tastes.completed(np.array([user, user]), np.array([track, track]))
    assert tastes.familiarity[user, new_genre] == pytest.approx(1 - 0.7 * 0.9 ** 2)  # 0.3 → 0.37 → 0.433
    tastes.end_week()
    assert tastes.familiarity[user, new_genre] == pytest.approx(1 - 0.7 * 0.9 ** 2)  # played this week: no fade
    assert tastes.familiarity[user, taste_genre] == pytest.approx(1 - 0.2 * (1 - 0.3))  # 1 → 0.86
    assert tastes.familiarity[user, idle_genre] == pytest.approx(0.3)  # already at φ
    tastes.end_week()
    assert tastes.familiarity[user, new_genre] == pytest.approx(0.433 - 0.2 * (0.433 - 0.3))


def test_habit_moves_weights_toward_what_was_completed(world: World) -> None:
    tastes = MovingTastes(world, ListenerConfig(habit_rate=0.1), seed=1)
    before = tastes.weight.copy()
    user = 0
    new_genre = int(np.flatnonzero(before[user] == 0)[0])
    tracks = np.flatnonzero(tastes.track_genre == new_genre)[:4]
    tastes.completed(np.full(4, user), tracks)
    tastes.end_week()
    expected = 0.9 * before[user]
    expected[new_genre] += 0.1
    np.testing.assert_allclose(tastes.weight[user], expected)
    np.testing.assert_allclose(tastes.weight.sum(axis=1), 1.0)
    np.testing.assert_allclose(tastes.weight[1:], before[1:])  # nothing completed: weights hold


def test_repeated_completed_plays_of_a_latent_liked_genre_make_it_liked(world: World) -> None:
    # The mechanism exploration pays through: a latent-liked genre is lukewarm at first (0.5-0.9 × φ) and, after
    # enough completed plays, liked nearly as much as its latent affinity.
    tastes = MovingTastes(world, ListenerConfig(), seed=1)
    user, genre = np.argwhere(tastes.latent_liked)[0]
    track = np.flatnonzero(tastes.track_genre == genre)[0]
    first = tastes.expressed(np.array([user]), np.array([track]))[0]
    assert first == pytest.approx(tastes.hidden[user, genre] * 0.3)
    tastes.completed(np.full(30, user), np.full(30, track))
    later = tastes.expressed(np.array([user]), np.array([track]))[0]
    assert later == pytest.approx(tastes.hidden[user, genre] * (1 - 0.7 * 0.9 ** 30))
    assert later > 2.5 * first


def test_organic_share_of_starts_and_their_genres(world: World) -> None:
    # Users without mixes play only their organic share, drawn from their taste genres (weight × familiarity).
    config = ListenerConfig(organic_share=0.3)
    listeners = Listeners(world, config, seed=2)
    events = pd.concat([listeners.listen(_no_slots(), f"2026-11-0{d}") for d in range(1, 8)], ignore_index=True)
    assert (events[s.POLICY] == s.POLICY_ORGANIC).all() and events[s.MIX_ID].isna().all()
    expected = 0.3 * world.users["n_plays_per_day"].sum() * 7
    assert abs(len(events) - expected) < 4 * np.sqrt(expected)
    user_rows, track_rows = listeners.tastes.rows(events[s.USER_ID].to_numpy(), events[s.TRACK_ID].to_numpy())
    genre = listeners.tastes.track_genre[track_rows]
    assert (MovingTastes(world, config, seed=2).weight[user_rows, genre] > 0).all()


def test_satiation_raises_skips_with_the_days_plays_of_a_genre(world: World) -> None:
    events = {}
    for satiation in (0.0, 0.05):
        listeners = Listeners(world, ListenerConfig(organic_share=1.0, satiation_per_play=satiation), seed=4)
        events[satiation] = pd.concat([listeners.listen(_no_slots(), f"2026-11-0{d}") for d in range(1, 4)])
    assert events[0.05][s.SKIPPED].mean() > events[0.0][s.SKIPPED].mean() + 0.05


def _no_slots() -> pd.DataFrame:
    return pd.DataFrame({s.USER_ID: pd.Series(dtype="int64"), s.MIX_INDEX: pd.Series(dtype="int64"),
                         s.POSITION: pd.Series(dtype="int64"), s.TRACK_ID: pd.Series(dtype="int64"),
                         s.MIX_ID: pd.Series(dtype="string"), s.DISCOVERY: pd.Series(dtype=bool),
                         s.POLICY: pd.Series(dtype="string"), s.PROPENSITY: pd.Series(dtype=float)})
