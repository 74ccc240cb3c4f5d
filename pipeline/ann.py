"""Approximate nearest-neighbour search over track embeddings (Annoy, memory-mapped)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_FILE = "tracks.ann"
META_FILE = "index.json"


def normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


@dataclass
class AnnoyIndex:
    """Angular (cosine) index; item ids are the row ids passed to `build`."""

    path: Path
    track_ids: np.ndarray
    dim: int
    n_trees: int
    search_k: int = -1

    @classmethod
    def build(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, n_trees: int, seed: int,
              search_k: int = -1) -> AnnoyIndex:
        from annoy import AnnoyIndex as Annoy

        directory.mkdir(parents=True, exist_ok=True)
        index = Annoy(vectors.shape[1], "angular")
        index.set_seed(seed)
        for row, vector in enumerate(vectors):
            index.add_item(row, vector)
        index.build(n_trees, n_jobs=1)
        index.save(str(directory / INDEX_FILE))
        np.save(directory / "track_ids.npy", track_ids)
        meta = {"dim": int(vectors.shape[1]), "n_trees": n_trees, "search_k": search_k, "metric": "angular"}
        (directory / META_FILE).write_text(json.dumps(meta, sort_keys=True))
        return cls(directory / INDEX_FILE, track_ids, int(vectors.shape[1]), n_trees, search_k)

    @classmethod
    def load(cls, directory: Path) -> AnnoyIndex:
        meta = json.loads((directory / META_FILE).read_text())
        track_ids = np.load(directory / "track_ids.npy")
        return cls(directory / INDEX_FILE, track_ids, meta["dim"], meta["n_trees"], meta["search_k"])

    def __post_init__(self) -> None:
        self._index = None

    def _annoy(self):
        if self._index is None:
            from annoy import AnnoyIndex as Annoy

            self._index = Annoy(self.dim, "angular")
            self._index.load(str(self.path))  # mmap: workers on a node share the pages
        return self._index

    def query(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k track ids and cosine similarities, best first."""
        rows, distances = self._annoy().get_nns_by_vector(vector, k, search_k=self.search_k, include_distances=True)
        cosine = 1.0 - np.square(np.asarray(distances, dtype=np.float64)) / 2.0
        return self.track_ids[np.asarray(rows, dtype=np.int64)], cosine


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k most cosine-similar vectors per query (batched BLAS)."""
    scores = normalise(queries) @ normalise(vectors).T
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return top


def recall_at_k(index: AnnoyIndex, queries: np.ndarray, vectors: np.ndarray, k: int) -> float:
    """Share of the exact top-k neighbours the index returns, averaged over queries."""
    truth = exact_top_k(queries, vectors, k)
    hits = 0
    for query, true_rows in zip(queries, truth, strict=True):
        found, _ = index.query(query, k)
        hits += len(np.intersect1d(found, index.track_ids[true_rows]))
    return hits / truth.size


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
