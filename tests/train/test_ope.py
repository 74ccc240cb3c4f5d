"""Off-policy estimators against answers known by enumeration."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.train.ope import (
    BanditLog,
    doubly_robust,
    evaluate_policy,
    greedy_weights,
    ips,
    point_estimates,
    snips,
    tilted_policy,
)

# One context, three tracks. Logging mu, target pi, rewards r: the target's true value is pi . r = 0.9.
MU = np.array([0.5, 0.3, 0.2])
PI = np.array([0.1, 0.2, 0.7])
REWARD = np.array([0.0, 1.0, 1.0])
TRUTH = float(PI @ REWARD)


def _exact_log(reward_model: np.ndarray) -> BanditLog:
    """10 rows whose action frequencies are exactly mu: the estimators' expectations, evaluated exactly."""
    actions = np.repeat([0, 1, 2], (MU * 10).round().astype(int))
    return BanditLog(REWARD[actions], PI[actions] / MU[actions], reward_model[actions],
                     np.full(len(actions), PI @ reward_model), np.arange(len(actions)))


def test_ips_and_snips_are_exact_on_a_log_with_the_logging_frequencies() -> None:
    log = _exact_log(np.zeros(3))
    assert ips(log.reward, log.weight) == pytest.approx(TRUTH)
    assert snips(log.reward, log.weight) == pytest.approx(TRUTH)


def test_doubly_robust_is_right_with_a_wrong_reward_model_and_right_weights() -> None:
    log = _exact_log(np.array([0.9, 0.1, 0.4]))
    assert doubly_robust(log.reward, log.weight, log.reward_model, log.reward_model_target) == pytest.approx(TRUTH)


def test_doubly_robust_is_right_with_a_perfect_reward_model_and_wrong_weights() -> None:
    log = _exact_log(REWARD.astype(float))
    wrong = log.weight * np.linspace(0.2, 3.0, len(log.weight))
    assert doubly_robust(log.reward, wrong, log.reward_model, log.reward_model_target) == pytest.approx(TRUTH)
    assert ips(log.reward, wrong) != pytest.approx(TRUTH)


def test_on_policy_logs_give_the_mean_reward_and_snips_ignores_the_weight_scale() -> None:
    reward = np.array([1.0, 0.0, 1.0, 1.0])
    ones = np.ones(4)
    assert ips(reward, ones) == snips(reward, ones) == 0.75
    assert snips(reward, 3 * ones) == 0.75 and ips(reward, 3 * ones) == 2.25
    assert np.isnan(snips(reward, np.zeros(4))) and np.isnan(ips(np.array([]), np.array([])))


def test_estimates_converge_on_sampled_logs() -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    actions = rng.choice(3, size=n, p=MU)
    reward = rng.random(n) < np.array([0.2, 0.6, 0.9])[actions]  # Bernoulli rewards; truth = pi . p
    truth = float(PI @ np.array([0.2, 0.6, 0.9]))
    weight = PI[actions] / MU[actions]
    standard_error = np.std(weight * reward) / np.sqrt(n)
    log = BanditLog(reward.astype(float), weight, np.full(n, 0.5), np.full(n, 0.5), np.arange(n))
    for name, value in point_estimates(log).items():
        assert abs(value - truth) < 4 * standard_error, name


def test_bootstrap_intervals_cover_the_point_are_seeded_and_shrink_with_data() -> None:
    rng = np.random.default_rng(6)

    def log_of(n: int) -> BanditLog:
        actions = rng.choice(3, size=n, p=MU)
        reward = (rng.random(n) < np.array([0.2, 0.6, 0.9])[actions]).astype(float)
        return BanditLog(reward, PI[actions] / MU[actions], np.full(n, 0.5), np.full(n, 0.5), np.arange(n) // 3)

    small, large = log_of(600), log_of(6000)
    first = evaluate_policy(small, n_bootstrap=200, seed=1)
    assert first == evaluate_policy(small, n_bootstrap=200, seed=1)
    assert first != evaluate_policy(small, n_bootstrap=200, seed=2)
    wide = evaluate_policy(large, n_bootstrap=200, seed=1)
    for name, estimate in first.items():
        assert estimate.low <= estimate.value <= estimate.high, name
        assert wide[name].high - wide[name].low < estimate.high - estimate.low, name


def test_bootstrap_resamples_whole_contexts() -> None:
    # Two contexts with opposite rewards: resampling contexts (not rows) can give 0 or 1 only, half each.
    log = BanditLog(np.array([1.0, 1.0, 0.0, 0.0]), np.ones(4), np.zeros(4), np.zeros(4), np.array([7, 7, 9, 9]))
    estimate = evaluate_policy(log, n_bootstrap=400, confidence=0.9, seed=3)["snips"]
    assert (estimate.value, estimate.low, estimate.high) == (0.5, 0.0, 1.0)


def test_bandit_log_refuses_ragged_or_negative_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        BanditLog(np.ones(3), np.ones(2), np.ones(3), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        BanditLog(np.ones(2), np.array([1.0, -1.0]), np.ones(2), np.ones(2), np.ones(2))


def test_greedy_weights() -> None:
    np.testing.assert_allclose(greedy_weights(np.array([True, False, True]), np.array([0.5, 0.1, 0.25])),
                               [2.0, 0.0, 4.0])


def test_tilted_policy_on_a_context_drawn_exactly_by_mu() -> None:
    # One mix whose 10 exploration draws follow mu exactly. The tilted policy's value by enumeration:
    # pi = mu * e / sum(mu * e). SNIPS (= IPS here: weights average 1 per context) must hit it exactly.
    score = np.array([0.2, 0.5, 0.8])
    actions = np.repeat([0, 1, 2], (MU * 10).round().astype(int))
    tilt = score / (1 - score)  # e = exp(logit(score) / 1)
    pi = MU * tilt / (MU @ tilt)
    weights, q_target = tilted_policy(score[actions], score[actions], np.zeros(len(actions)), temperature=1.0)
    assert weights.mean() == pytest.approx(1.0)
    assert snips(REWARD[actions], weights) == pytest.approx(pi @ REWARD)
    assert ips(REWARD[actions], weights) == pytest.approx(pi @ REWARD)
    np.testing.assert_allclose(q_target, pi @ score)


def test_tilted_policy_at_high_temperature_is_the_logging_policy() -> None:
    weights, _ = tilted_policy(np.array([0.1, 0.9, 0.5, 0.3]), np.zeros(4), np.array([1, 1, 2, 2]), temperature=1e9)
    np.testing.assert_allclose(weights, 1.0)
