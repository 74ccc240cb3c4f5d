"""The rule re-ranker keeps the re-ranker contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pipeline.core.config import RerankConfig
from pipeline.reranking.reranker import Reranker, RuleReranker
from tests.contracts.reranker import RerankerContract


class TestRuleReranker(RerankerContract):
    @pytest.fixture(scope="class")
    def make_reranker(self) -> Callable[[RerankConfig], Reranker]:
        return RuleReranker
