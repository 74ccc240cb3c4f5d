"""The synthetic OPE experiment's building blocks: a logging policy whose propensities are true, and the truth."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.config import WorldConfig
from pipeline.sim.ope_experiment import ExperimentConfig, SyntheticWorld
from pipeline.sim.world import generate_world, true_affinity

SMALL = ExperimentConfig(n_users=40, n_tracks=400, n_artists=60, candidates=5)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(SMALL, seed=3)


def test_logging_propensities_are_distributions_with_exploration_support(world: SyntheticWorld) -> None:
    ctx = world.contexts(500)
    mu = world.logging_propensities(ctx)
    np.testing.assert_allclose(mu.sum(axis=1), 1.0)
    assert mu.min() >= SMALL.epsilon / SMALL.candidates - 1e-12
    # Biased toward popular tracks: the more popular of a context's tracks gets more probability on average.
    popular = world.popularity_z[ctx.tracks] > np.median(world.popularity_z[ctx.tracks], axis=1, keepdims=True)
    assert mu[popular].mean() > mu[~popular].mean()


def test_logged_placements_follow_the_logged_propensities(world: SyntheticWorld) -> None:
    ctx = world.contexts(1)
    repeated = type(ctx)(np.repeat(ctx.users, 20_000), np.repeat(ctx.tracks, 20_000, axis=0))
    mu = world.logging_propensities(repeated)
    placed, propensity, _ = world.log(repeated, mu)
    frequency = np.bincount(placed, minlength=SMALL.candidates) / len(placed)
    standard_error = np.sqrt(mu[0] * (1 - mu[0]) / len(placed))
    assert np.all(np.abs(frequency - mu[0]) < 4 * standard_error)
    np.testing.assert_allclose(propensity, mu[0][placed])


def test_completion_is_the_worlds_ground_truth(world: SyntheticWorld) -> None:
    ctx = world.contexts(50)
    users = world.affinity.users[ctx.users]
    tracks = world.affinity.tracks[ctx.tracks[:, 0]]

    truth = generate_world(WorldConfig(seed=3, n_users=40, n_tracks=400, n_artists=60, history_days=1,
                                       plays_per_day=1.0))
    affinity = true_affinity(truth.tastes, truth.catalog, users.to_numpy(), tracks.to_numpy())
    expected = 1 - np.clip(0.65 - 0.5 * affinity, 0.05, 0.95)  # the world's skip law, P(skip) = 0.65 - 0.5 a
    np.testing.assert_allclose(world.completion(ctx.users, ctx.tracks[:, 0]), expected)

