"""Both scorers keep the scorer contract: scikit-learn's own `predict_proba`, and the same trees compiled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline.scoring.scorer import Scorer, SklearnScorer
from tests.contracts.scorer import ScorerContract


class TestSklearnScorer(ScorerContract):
    @pytest.fixture(scope="class")
    def make_scorer(self, model: Any) -> Callable[[], Scorer]:
        return lambda: SklearnScorer(model)


class TestCompiledRanker(ScorerContract):
    @pytest.fixture(scope="class")
    def make_scorer(self, model: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Scorer]:
        pytest.importorskip("tl2cgen")
        from pipeline.scoring.compiled import compile_ranker

        cache = tmp_path_factory.mktemp("compiled")
        compile_ranker(model, cache)  # compiled once; every new scorer loads the cached library
        return lambda: compile_ranker(model, cache)
