"""Implicit-feedback matrix factorisation (ALS) of who started which track."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from pipeline.core import schema as s
from pipeline.core.config import RetrievalConfig

EMBEDDINGS_FILE = "embeddings.npz"  # a model run's embeddings artifact (embeddings/EMBEDDINGS_FILE)


@dataclass(frozen=True)
class Embeddings:
    """User and track vectors, with the ids their rows stand for."""

    user_ids: np.ndarray
    track_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    @cached_property
    def user_row(self) -> dict[int, int]:
        return {int(u): i for i, u in enumerate(self.user_ids)}

    @cached_property
    def item_row(self) -> dict[int, int]:
        return {int(t): i for i, t in enumerate(self.track_ids)}

    def lookup(self) -> tuple[np.ndarray, np.ndarray, dict[int, int], dict[int, int]]:
        """The tuple `features.pair_features` takes."""
        return self.user_factors, self.item_factors, self.user_row, self.item_row

    def version(self) -> str:
        """Content hash: the same vectors always get the same version."""
        digest = hashlib.sha256()
        for array in (self.user_ids, self.track_ids, self.user_factors, self.item_factors):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:12]

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "embeddings.npz", user_ids=self.user_ids, track_ids=self.track_ids,
                 user_factors=self.user_factors, item_factors=self.item_factors)
        return directory / "embeddings.npz"

    @classmethod
    def load(cls, path: Path) -> Embeddings:
        with np.load(path if path.suffix == ".npz" else path / "embeddings.npz") as data:
            return cls(data["user_ids"], data["track_ids"], data["user_factors"], data["item_factors"])


def interaction_matrix(events: pd.DataFrame) -> tuple[csr_matrix, np.ndarray, np.ndarray]:
    """Users × tracks counts of track starts. Skips count too: ALS learns what is near a
    user's listening, and the ranker (not retrieval) learns what they skip — so the skip
    label never leaks into the retrieval score the ranker sees."""
    users, user_index = np.unique(events[s.USER_ID].to_numpy(), return_inverse=True)
    tracks, track_index = np.unique(events[s.TRACK_ID].to_numpy(), return_inverse=True)
    counts = np.ones(len(events), dtype=np.float32)
    matrix = csr_matrix((counts, (user_index, track_index)), shape=(len(users), len(tracks)))
    matrix.sum_duplicates()
    return matrix, users, tracks


def fit_als(events: pd.DataFrame, config: RetrievalConfig, seed: int) -> Embeddings:
    """BM25-weighted ALS (implicit); single-threaded so the same seed gives the same vectors."""
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight

    matrix, users, tracks = interaction_matrix(events)
    weighted = bm25_weight(matrix, K1=100, B=0.8).tocsr().astype(np.float32)
    model = AlternatingLeastSquares(
        factors=config.factors,
        regularization=config.als_regularization,
        iterations=config.als_iterations,
        random_state=seed,
        num_threads=1,
        calculate_training_loss=False,
    )
    model.fit(weighted, show_progress=False)
    return Embeddings(
        user_ids=users.astype("int64"),
        track_ids=tracks.astype("int64"),
        user_factors=np.asarray(model.user_factors, dtype=np.float32),
        item_factors=np.asarray(model.item_factors, dtype=np.float32),
    )
