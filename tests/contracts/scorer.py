"""What every `Scorer` promises: the scikit-learn model's probabilities, one per row in row order, and a scorer
that survives pickling.

`ScorerContract` holds the tests; each scorer subclasses it once and provides `make_scorer(model)`, a function
that returns a new scorer of the fitted model. The model is a real ranker (`fit_ranker`) trained on synthetic
ranker inputs with a known signal, small enough to train and compile in about a second.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.core.config import Settings, TrainingConfig
from pipeline.features.definitions import FEATURE_COLUMNS
from pipeline.scoring.ranker import TrainingSet, fit_ranker
from pipeline.scoring.scorer import Scorer

TOLERANCE = 1e-6  # against predict_proba: compiled code may round differently in the last bits
TRAINING_ROWS, SCORED_ROWS = 2000, 500
PROFILE_COLUMNS = ["user_log_plays", "user_skip_rate", "user_completion"]


def ranker_inputs(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic `FEATURE_COLUMNS` rows in their ranges; one user in ten has no profile (NaN), as in production."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "genre_affinity": rng.random(rows),
        "mood_affinity": rng.random(rows),
        "user_log_plays": rng.uniform(0, 8, rows),
        "user_skip_rate": rng.random(rows),
        "user_completion": rng.random(rows),
        "track_log_plays": rng.uniform(0, 10, rows),
        "track_skip_rate": rng.random(rows),
        "track_age_years": rng.uniform(0, 40, rows),
        "duration_min": rng.uniform(1, 8, rows),
        "als_score": rng.normal(0, 1, rows),
        "known": rng.integers(0, 2, rows).astype("float64"),
    })[list(FEATURE_COLUMNS)]
    frame.loc[rng.random(rows) < 0.1, PROFILE_COLUMNS] = np.nan
    return frame


def played_through(features: pd.DataFrame, seed: int) -> np.ndarray:
    """The known signal: ALS score and genre affinity raise the chance of a play without skip, skips lower it."""
    logit = 1.5 * features["als_score"] + 2.0 * features["genre_affinity"] - 2.0 * features["track_skip_rate"]
    chance = 1.0 / (1.0 + np.exp(-logit.to_numpy()))
    return (np.random.default_rng(seed).random(len(features)) < chance).astype("int64")


class ScorerContract:
    """The tests every scorer passes. Subclasses provide `make_scorer`."""

    @pytest.fixture(scope="class", autouse=True)
    def one_thread(self) -> Iterator[None]:
        """Train and score on one OpenMP thread: the trees are tiny, and on a shared machine threads only wait."""
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            yield

    @pytest.fixture(scope="class")
    def model(self, tmp_path_factory: pytest.TempPathFactory) -> Any:
        features = ranker_inputs(TRAINING_ROWS, seed=1)
        label = played_through(features, seed=2)
        train = TrainingSet(features, label, np.ones(len(label)), np.full(len(label), "2026-11-01"))
        settings = Settings(home=tmp_path_factory.mktemp("home"),
                            training=TrainingConfig(max_iter=15, max_leaf_nodes=8))
        return fit_ranker(train, settings)

    @pytest.fixture(scope="class")
    def make_scorer(self, model: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Scorer]:
        raise NotImplementedError("a subclass provides a function returning a new scorer of `model`")

    @pytest.fixture
    def scorer(self, make_scorer: Callable[[], Scorer]) -> Scorer:
        return make_scorer()

    @pytest.fixture(scope="class")
    def features(self) -> pd.DataFrame:
        return ranker_inputs(SCORED_ROWS, seed=3)

    @pytest.fixture(scope="class")
    def expected(self, model: Any, features: pd.DataFrame) -> np.ndarray:
        return model.predict_proba(features)[:, 1]

    def test_is_a_scorer(self, scorer) -> None:
        assert isinstance(scorer, Scorer)

    def test_scores_equal_the_models_predict_proba_row_for_row(self, scorer, features, expected) -> None:
        assert np.ptp(expected) > 0.5  # the model learned the signal: a constant scorer cannot pass
        np.testing.assert_allclose(scorer.score(features), expected, rtol=0, atol=TOLERANCE)

    def test_one_finite_probability_per_row(self, scorer, features) -> None:
        scores = np.asarray(scorer.score(features))
        assert scores.shape == (len(features),)
        assert np.isfinite(scores).all()
        assert ((scores >= 0) & (scores <= 1)).all()

    def test_shuffled_rows_get_their_scores_shuffled_the_same_way(self, scorer, features) -> None:
        scores = scorer.score(features)
        order = np.random.default_rng(4).permutation(len(features))
        np.testing.assert_allclose(scorer.score(features.iloc[order]), scores[order], rtol=0, atol=1e-12)
        # The frame's index labels play no part: rows are scored by position.
        renumbered = features.iloc[order].reset_index(drop=True)
        np.testing.assert_allclose(scorer.score(renumbered), scores[order], rtol=0, atol=1e-12)

    def test_a_row_scores_the_same_alone_as_in_a_batch(self, scorer, features) -> None:
        scores = scorer.score(features)
        for row in (0, 17, len(features) - 1):
            np.testing.assert_allclose(scorer.score(features.iloc[[row]]), scores[[row]], rtol=0, atol=1e-12)

    def test_a_pickled_scorer_scores_the_same(self, scorer, features) -> None:
        copy = pickle.loads(pickle.dumps(scorer))
        np.testing.assert_allclose(copy.score(features), scorer.score(features), rtol=0, atol=1e-12)

    def test_a_scorer_that_has_scored_still_pickles_and_scores_the_same(self, scorer, features) -> None:
        scores = scorer.score(features)
        copy = pickle.loads(pickle.dumps(scorer))
        np.testing.assert_allclose(copy.score(features), scores, rtol=0, atol=1e-12)
