"""Stage 3's interface: a `Reranker` turns one user's scored candidates and exploration pool into mixes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.core.columns import Columns
from pipeline.core.config import RerankConfig
from pipeline.reranking.rules import rerank_columns


class Reranker(Protocol):
    def __call__(self, candidates: Columns, cluster_genres: list[str], pool: Columns,
                 rng: np.random.Generator) -> tuple[Columns, list[int]]:
        """All mixes of one user as slot columns (`rules.SLOT_COLUMNS`), and the cluster each mix is of.

        `candidates`: track columns + score + cluster (0 .. len(cluster_genres) - 1); `pool`: never-played tracks
        exploration may draw from; `rng`: the only source of randomness (seeded per user and night).
        """
        ...


@dataclass(frozen=True)
class RuleReranker:
    """The platform's rules (`pipeline.reranking.rules`): discovery quota, artist cap, no repeats, exploration."""

    config: RerankConfig

    def __call__(self, candidates: Columns, cluster_genres: list[str], pool: Columns,
                 rng: np.random.Generator) -> tuple[Columns, list[int]]:
        return rerank_columns(candidates, len(cluster_genres), pool, self.config, rng, cluster_genres)
