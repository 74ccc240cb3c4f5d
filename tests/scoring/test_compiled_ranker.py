"""The compiled ranker scores exactly like scikit-learn, is cached by content, and is only used where it pays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from pipeline.scoring.compiled import CompiledRanker, compile_ranker
from pipeline.scoring.scorer import SklearnScorer, scorer

pytest.importorskip("tl2cgen")


@pytest.fixture(scope="module")
def fitted() -> tuple[HistGradientBoostingClassifier, pd.DataFrame]:
    """A small ranker on features with missing values (users without a profile), as the production one sees."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(4000, 5)), columns=["als", "affinity", "plays", "skips", "known"])
    frame = frame.mask(rng.random(frame.shape) < 0.1)
    label = (frame["als"].fillna(0) + frame["affinity"].fillna(-1) * 0.5 + rng.normal(size=len(frame)) > 0)
    model = HistGradientBoostingClassifier(max_iter=20, max_leaf_nodes=8, early_stopping=False, random_state=0)
    return model.fit(frame, label.astype(int)), frame


def test_compiled_scores_equal_sklearn(fitted, tmp_path) -> None:
    model, frame = fitted
    compiled = compile_ranker(model, tmp_path)
    expected = model.predict_proba(frame)
    np.testing.assert_allclose(compiled.predict_proba(frame), expected, rtol=0, atol=1e-12)
    # Columns are taken by name, in the order the model was fitted on.
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_allclose(compiled.predict_proba(shuffled), expected, rtol=0, atol=1e-12)


def test_library_is_cached_by_model_content(fitted, tmp_path) -> None:
    model, frame = fitted
    first = compile_ranker(model, tmp_path)
    built = first.library.stat().st_mtime_ns
    assert compile_ranker(model, tmp_path).library == first.library
    assert first.library.stat().st_mtime_ns == built  # loaded, not rebuilt
    other = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(frame.fillna(0), frame["als"].fillna(0) > 0)
    assert compile_ranker(other, tmp_path).library != first.library
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.library.name,
                                                                 compile_ranker(other, tmp_path).library.name])


def test_scorer_compiles_only_big_shards(fitted, tmp_path) -> None:
    model, _ = fitted
    assert scorer(model, users=99, min_users=100, cache=tmp_path) == SklearnScorer(model)
    assert isinstance(scorer(model, users=100, min_users=100, cache=tmp_path), CompiledRanker)


def test_scorer_falls_back_to_sklearn_without_a_compiler(fitted, tmp_path, monkeypatch, caplog) -> None:
    model, _ = fitted
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no gcc on this "node"
    assert scorer(model, users=10, min_users=0, cache=tmp_path / "cache") == SklearnScorer(model)
    assert "compiling the ranker failed" in caplog.text
