"""The bench's uncompiled ranker scores through `SklearnScorer` (`dailymix bench --no-compile`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from pipeline.bench.nightly import as_scorer
from pipeline.scoring.scorer import SklearnScorer


def test_a_scikit_learn_model_is_wrapped_and_scores_probabilities() -> None:
    rng = np.random.default_rng(0)
    features = pd.DataFrame({"a": rng.random(200), "b": rng.random(200)})
    model = HistGradientBoostingClassifier(max_iter=5).fit(features, (features["a"] > 0.5).astype(int))
    wrapped = as_scorer(model)
    assert isinstance(wrapped, SklearnScorer)
    np.testing.assert_array_equal(wrapped.score(features), model.predict_proba(features)[:, 1])
    assert as_scorer(wrapped) is wrapped
