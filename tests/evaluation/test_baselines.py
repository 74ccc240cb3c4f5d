"""Baselines: EASE and RP3beta against answers worked out by hand and against their definitions, the pieces the
others are built from, and tuning that chooses on validation only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from pipeline.evaluation import baselines as bl


def _matrix(rows: list[list[int]]) -> csr_matrix:
    return csr_matrix(np.asarray(rows, dtype=np.float32))


# --- EASE ---------------------------------------------------------------------------------------------------------


def test_ease_weights_by_hand() -> None:
    # Two items: B[i, j] = x_i·x_j / (x_i·x_i + λ). x0 = (1, 1, 1), x1 = (1, 1, 0), λ = 1 → 2/4 and 2/3.
    x = np.array([[1, 1], [1, 1], [1, 0]], dtype=np.float64)
    np.testing.assert_allclose(bl.ease_weights(x, 1.0), [[0.0, 0.5], [2 / 3, 0.0]], atol=1e-12)


def test_ease_columns_are_ridge_regressions_on_the_other_items() -> None:
    """The definition: column j of B regresses item j on every other item with an L2 penalty λ."""
    x = (np.random.default_rng(0).random((30, 6)) < 0.4).astype(np.float64)
    lam = 2.5
    weights = bl.ease_weights(x, lam)
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + lam * np.eye(5), a.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], ridge, atol=1e-9)
        assert weights[j, j] == 0.0


def test_ease_scores_only_items_with_two_listeners_and_recommends_the_co_listened_one() -> None:
    # Items 0 and 1 are always heard together; item 3 has one listener; user 3 heard only item 0.
    data = bl.Interactions.of(_matrix([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 1, 0]]))
    scores = bl.ease(data, {"weighting": "binary", "regularization": 0.5}, seed=0)
    assert (scores[:, 3] == bl.UNSCORED).all()
    assert scores[3, 1] > scores[3, 2] > bl.UNSCORED


# --- RP3beta ------------------------------------------------------------------------------------------------------


# u0 heard items {0, 1}, u1 heard {1, 2}: item degrees 1, 2, 1; user degrees 2, 2.
WALK = _matrix([[1, 1, 0], [0, 1, 1]])


def test_rp3beta_walk_by_hand() -> None:
    # item 1 → u0 or u1 (1/2 each) → one of their two items (1/2 each)
    expected = np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(bl.rp3beta_weights(WALK, alpha=1.0, beta=0.0), expected)
    np.testing.assert_allclose(bl.rp3beta_weights(WALK, alpha=1.0, beta=1.0), expected / [1.0, 2.0, 1.0])
    # α squares every step's probability: item 1 → item 0 is (1/2)² × (1/2)²
    assert bl.rp3beta_weights(WALK, alpha=2.0, beta=0.0)[1, 0] == pytest.approx(1 / 16)


def test_rp3beta_without_exponents_is_a_random_walk() -> None:
    binary = csr_matrix((np.random.default_rng(1).random((40, 12)) < 0.3).astype(np.float64))
    binary = binary[:, np.flatnonzero(np.asarray(binary.sum(axis=0)).ravel() > 0)]
    rows = bl.rp3beta_weights(binary.tocsr(), alpha=1.0, beta=0.0).sum(axis=1)
    np.testing.assert_allclose(rows, 1.0)


def test_rp3beta_popularity_penalty_turns_a_user_from_the_popular_item() -> None:
    # User 0 heard item 0. The walk from item 0 reaches item 1 with 5/18, item 2 with 1/9; but item 1 has 6
    # listeners and item 2 only 2, so divided by popularity item 2 wins (1/18 against 5/108).
    data = bl.Interactions.of(_matrix([[1, 0, 0], [1, 1, 0], [1, 1, 1], *[[0, 1, 0]] * 4, [0, 0, 1]]))
    plain = bl.rp3beta(data, {"alpha": 1.0, "beta": 0.0, "k": None}, seed=0)
    penalised = bl.rp3beta(data, {"alpha": 1.0, "beta": 1.0, "k": None}, seed=0)
    assert plain[0, 1] > plain[0, 2]
    assert penalised[0, 2] > penalised[0, 1]


# --- the pieces ---------------------------------------------------------------------------------------------------


def test_keep_top_k_keeps_each_columns_largest() -> None:
    similarity = np.array([[0.0, 0.9, 0.1], [0.5, 0.0, 0.8], [0.4, 0.2, 0.0]])
    np.testing.assert_array_equal(bl.keep_top_k(similarity, 1), [[0.0, 0.9, 0.0], [0.5, 0.0, 0.8], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(bl.keep_top_k(similarity, None), similarity)


def test_log_confidence_scales_play_counts() -> None:
    plays = _matrix([[1, 0, 9], [0, 99, 0]])
    data = bl.Interactions(csr_matrix((plays > 0).astype(np.float32)), plays)
    np.testing.assert_allclose(bl.confidence(data, "log", alpha=2.0).toarray(),
                               2.0 * np.log1p(plays.toarray()), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown ALS weighting 'raw'"):
        bl.confidence(data, "raw")


def test_popularity_counts_listeners_not_plays() -> None:
    data = bl.Interactions(_matrix([[1, 1], [1, 0]]), _matrix([[1, 500], [3, 0]]))
    np.testing.assert_array_equal(bl.popularity(data, {}, 0)[1], [2, 1])


# --- tuning -------------------------------------------------------------------------------------------------------


def test_tuning_chooses_on_validation_and_refits_on_training() -> None:
    """A model whose scores are its parameter times the matrix: the judge (validation) prefers 2; the chosen
    setting is then fitted on the training matrix, and quick runs take the quick setting untried."""
    train, validation = bl.Interactions.of(_matrix([[1, 0]])), bl.Interactions.of(_matrix([[0, 1]]))

    def fit(data: bl.Interactions, params: dict, seed: int) -> np.ndarray:
        return params["p"] * data.binary.toarray()

    model = bl.Baseline(fit, bl.grid(p=[1.0, 2.0, 3.0]), {"p": 3.0})
    tuned = bl.tune(model, train, validation, judge=lambda scores: -abs(scores.sum() - 2.0), seed=0)
    assert tuned.params == {"p": 2.0}
    assert [value for _, value in tuned.validation] == [-1.0, 0.0, -1.0]
    np.testing.assert_array_equal(tuned.validation_scores, [[0.0, 2.0]])
    np.testing.assert_array_equal(tuned.scores, [[2.0, 0.0]])
    quick = bl.tune(model, train, validation, judge=lambda scores: 1 / 0, seed=0, quick=True)
    assert quick.params == {"p": 3.0} and quick.validation == []
