"""Stage 2's interface: a `Scorer` turns ranker inputs into the probability that each track is played through.

Two implementations give the same scores: the scikit-learn model itself, and the same trees compiled to native
code (`pipeline.scoring.compiled`) for shards big enough to pay for compiling.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@runtime_checkable
class Scorer(Protocol):
    """Scores rows of ranker inputs (`features.definitions.FEATURE_COLUMNS`) in one batched call."""

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """P(played through) per row, in row order."""
        ...


@dataclass
class SklearnScorer:
    """The fitted scikit-learn classifier, scoring with `predict_proba`."""

    model: Any

    def score(self, features: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(features)[:, 1]


def scorer(model: Any, users: int, min_users: int, cache: Path) -> Scorer:
    """What a shard scores with: the compiled ranker when the shard has at least `min_users` users and the
    compiler works on this node; otherwise the model itself (same scores, slower)."""
    from pipeline.scoring.compiled import compile_ranker

    if users < min_users:
        return SklearnScorer(model)
    try:
        return compile_ranker(model, cache)
    except Exception as error:  # no C compiler on the node, an unsupported model: sklearn still scores correctly
        log.warning("scoring with scikit-learn: compiling the ranker failed (%s)", error)
        return SklearnScorer(model)
