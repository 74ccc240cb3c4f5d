"""Approximate nearest-neighbour search over track embeddings, behind one small interface.

Three backends answer the same calls (`build`, `load`, `query`, `query_batch`):

* `annoy` (default): random-projection trees in one file that is memory-mapped on load, so every worker on
  a node shares one copy of the pages.
* `voyager`: Spotify's HNSW index (Annoy's successor), cosine space; loaded into memory per process.
* `faiss`: an inverted-file index (k-means cells, exact vectors) searched a whole matrix of queries per call;
  memory-mapped on load like Annoy.

All are cosine: a query's norm does not matter and scores are cosine similarities, best first. Item ids
are the ids passed to `build` (track ids), never the backend's internal row numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

INDEX_FILE = "tracks.ann"
VOYAGER_FILE = "tracks.voy"
META_FILE = "index.json"
IDS_FILE = "track_ids.npy"
FAISS_FILE = "tracks.faiss"
BACKENDS = ("annoy", "voyager", "faiss")


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (zero rows stay zero): cosine becomes a dot product."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


class AnnIndex(Protocol):
    """An ANN backend: how it is built, tuned to a recall and loaded, and what retrieval asks of it."""

    backend: ClassVar[str]
    effort_keys: ClassVar[tuple[str, ...]]  # the params that say how hard it searches (for messages)
    path: Path
    track_ids: np.ndarray
    dim: int

    @classmethod
    def build(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int,
              **params: Any) -> AnnIndex: ...

    @classmethod
    def load(cls, directory: Path) -> AnnIndex: ...

    @classmethod
    def tuned(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int, queries: np.ndarray,
              tuning: Tuning, k: int) -> TunedIndex:
        """The cheapest index of this backend whose recall@k on `queries` meets `tuning.target_recall`, trying
        more effort step by step up to the tuning's cap."""
        ...

    @property
    def params(self) -> dict[str, Any]: ...

    def with_query_effort(self, effort: int) -> AnnIndex:
        """The same index searched with another query-time depth (annoy: search_k; voyager: ef; faiss: nprobe)."""
        ...

    def query(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def query_batch(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def _write_meta(directory: Path, backend: str, dim: int, params: dict[str, Any], track_ids: np.ndarray) -> None:
    np.save(directory / IDS_FILE, np.asarray(track_ids, dtype=np.int64))
    meta = {"backend": backend, "dim": dim, "metric": "cosine", **params}
    (directory / META_FILE).write_text(json.dumps(meta, sort_keys=True))


MISSING = -1  # id padding when a shallow search returns fewer than k neighbours (cosine padding: NaN)


def _pad(rows: list[np.ndarray], k: int, fill: float) -> np.ndarray:
    """One (n, k) array from rows of up to k values; a search may return fewer than k."""
    out = np.full((len(rows), k), fill, dtype=np.result_type(*rows) if rows else np.float64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row[:k]
    return out


@dataclass
class AnnoyIndex:
    """Annoy angular index, memory-mapped on load. search_k = -1 means Annoy's default n_trees * k."""

    backend: ClassVar[str] = "annoy"
    effort_keys: ClassVar[tuple[str, ...]] = ("n_trees", "search_k")
    path: Path
    track_ids: np.ndarray
    dim: int
    n_trees: int
    search_k: int = -1
    _index: Any = field(default=None, init=False, repr=False)

    @classmethod
    def build(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, n_trees: int, seed: int,
              search_k: int = -1) -> AnnoyIndex:
        """Seeded and single-threaded, so the same vectors and seed give a byte-identical file."""
        from annoy import AnnoyIndex as Annoy

        directory.mkdir(parents=True, exist_ok=True)
        index = Annoy(vectors.shape[1], "angular")
        index.set_seed(seed)
        for row, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
            index.add_item(row, vector)
        index.build(n_trees, n_jobs=1)
        index.save(str(directory / INDEX_FILE))
        _write_meta(directory, cls.backend, int(vectors.shape[1]), {"n_trees": n_trees, "search_k": search_k},
                    track_ids)
        return cls(directory / INDEX_FILE, np.asarray(track_ids), int(vectors.shape[1]), n_trees, search_k)

    @classmethod
    def load(cls, directory: Path) -> AnnoyIndex:
        meta = json.loads((directory / META_FILE).read_text())
        return cls(directory / INDEX_FILE, np.load(directory / IDS_FILE), meta["dim"], meta["n_trees"],
                   meta["search_k"])

    @property
    def params(self) -> dict[str, Any]:
        return {"n_trees": self.n_trees, "search_k": self.search_k}

    def with_query_effort(self, effort: int) -> AnnoyIndex:
        """The same file searched deeper or shallower (search_k is a query-time knob)."""
        return AnnoyIndex(self.path, self.track_ids, self.dim, self.n_trees, effort)

    @classmethod
    def tuned(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int, queries: np.ndarray,
              tuning: Tuning, k: int) -> TunedIndex:
        """Trees double from `tuning.n_trees` until the target recall or `tuning.max_trees`."""
        attempts: list[dict[str, Any]] = []
        n_trees = min(tuning.n_trees, tuning.max_trees)
        while True:
            index = cls.build(vectors, track_ids, directory, n_trees=n_trees, seed=seed, search_k=tuning.search_k)
            recall = recall_at_k(index, queries, vectors, k)
            attempts.append({"n_trees": n_trees, "search_k": tuning.search_k, "recall": recall})
            if recall >= tuning.target_recall or n_trees >= tuning.max_trees:
                return TunedIndex(index, recall, attempts)
            n_trees = min(2 * n_trees, tuning.max_trees)

    def _annoy(self) -> Any:
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

    def query_batch(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One row per query (Annoy has no batch call; the loop is the same work). Rows shorter than
        k (a search too shallow to find k) are padded with id MISSING and cosine NaN."""
        results = [self.query(vector, k) for vector in vectors]
        k = min(k, len(self.track_ids))
        return _pad([r[0] for r in results], k, MISSING), _pad([r[1] for r in results], k, np.nan)


@dataclass
class VoyagerIndex:
    """Voyager HNSW index in cosine space. `ef` is the query-time search depth (at least k is used)."""

    backend: ClassVar[str] = "voyager"
    effort_keys: ClassVar[tuple[str, ...]] = ("m", "ef")
    path: Path
    track_ids: np.ndarray
    dim: int
    m: int = 16
    ef_construction: int = 200
    ef: int = 1000
    _index: Any = field(default=None, init=False, repr=False)

    @classmethod
    def build(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int, m: int = 16,
              ef_construction: int = 200, ef: int = 1000) -> VoyagerIndex:
        """Seeded, single-threaded insertion in row order: the same vectors and seed give the same graph."""
        from voyager import Index, Space

        directory.mkdir(parents=True, exist_ok=True)
        index = Index(Space.Cosine, num_dimensions=int(vectors.shape[1]), M=m, ef_construction=ef_construction,
                      random_seed=seed, max_elements=len(vectors))
        index.add_items(np.asarray(vectors, dtype=np.float32), ids=list(range(len(vectors))), num_threads=1)
        index.save(str(directory / VOYAGER_FILE))
        params = {"m": m, "ef_construction": ef_construction, "ef": ef}
        _write_meta(directory, cls.backend, int(vectors.shape[1]), params, track_ids)
        return cls(directory / VOYAGER_FILE, np.asarray(track_ids), int(vectors.shape[1]), m, ef_construction, ef)

    @classmethod
    def load(cls, directory: Path) -> VoyagerIndex:
        meta = json.loads((directory / META_FILE).read_text())
        return cls(directory / VOYAGER_FILE, np.load(directory / IDS_FILE), meta["dim"], meta["m"],
                   meta["ef_construction"], meta["ef"])

    @property
    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef": self.ef}

    def with_query_effort(self, effort: int) -> VoyagerIndex:
        """The same graph searched with another depth (ef is a query-time knob)."""
        return VoyagerIndex(self.path, self.track_ids, self.dim, self.m, self.ef_construction, effort)

    @classmethod
    def tuned(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int, queries: np.ndarray,
              tuning: Tuning, k: int) -> TunedIndex:
        """One graph; only the query depth ef grows, from k, doubling (it is recorded in index.json, not in the
        graph)."""
        index = cls.build(vectors, track_ids, directory, seed, tuning.m, tuning.ef_construction, k)
        return _deepen_queries(index, "ef", k, tuning.max_ef, queries, vectors, k, tuning.target_recall)

    def _voyager(self) -> Any:
        if self._index is None:
            from voyager import Index

            self._index = Index.load(str(self.path))
        return self._index

    def query(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k track ids and cosine similarities, best first."""
        ids, cosine = self.query_batch(np.asarray(vector)[None, :], k)
        return ids[0], cosine[0]

    def query_batch(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """All queries in one native call (single-threaded, so results never depend on scheduling)."""
        index = self._voyager()
        k = min(k, len(self.track_ids))
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        rows, distances = index.query(queries, k=k, num_threads=1, query_ef=max(self.ef, k))
        cosine = 1.0 - np.asarray(distances, dtype=np.float64)
        return self.track_ids[np.asarray(rows, dtype=np.int64)], cosine


def default_nlist(n_vectors: int) -> int:
    """Inverted-file cells for `n_vectors`: about 4 * sqrt(n), at least 1, and at most one per 39 vectors (the
    training sample faiss asks for each cell)."""
    return max(1, min(round(4 * math.sqrt(n_vectors)), n_vectors // 39))


@contextmanager
def _one_faiss_thread() -> Iterator[Any]:
    """faiss with one OpenMP thread (one shard per core; builds and answers never depend on scheduling)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield faiss
    finally:
        faiss.omp_set_num_threads(before)


@dataclass
class FaissIndex:
    """faiss IVF-Flat on unit vectors (inner product = cosine): `nlist` k-means cells, a query scans its `nprobe`
    nearest cells exactly. nlist = 0 at build means `default_nlist`. Memory-mapped on load. Not the default
    backend yet: docs/decisions/faiss-batched-retrieval.md."""

    backend: ClassVar[str] = "faiss"
    effort_keys: ClassVar[tuple[str, ...]] = ("nlist", "nprobe")
    path: Path
    track_ids: np.ndarray
    dim: int
    nlist: int
    nprobe: int = 32
    _index: Any = field(default=None, init=False, repr=False)

    @classmethod
    def build(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int, nlist: int = 0,
              nprobe: int = 32) -> FaissIndex:
        """Seeded k-means on one thread: the same vectors and seed give a byte-identical file."""
        directory.mkdir(parents=True, exist_ok=True)
        unit = np.ascontiguousarray(normalise(np.asarray(vectors, dtype=np.float32)), dtype=np.float32)
        nlist = nlist or default_nlist(len(unit))
        with _one_faiss_thread() as faiss:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(unit.shape[1]), unit.shape[1], nlist,
                                       faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed
            index.train(unit)
            index.add(unit)
            faiss.write_index(index, str(directory / FAISS_FILE))
        _write_meta(directory, cls.backend, int(unit.shape[1]), {"nlist": nlist, "nprobe": nprobe}, track_ids)
        return cls(directory / FAISS_FILE, np.asarray(track_ids), int(unit.shape[1]), nlist, nprobe)

    @classmethod
    def load(cls, directory: Path) -> FaissIndex:
        meta = json.loads((directory / META_FILE).read_text())
        return cls(directory / FAISS_FILE, np.load(directory / IDS_FILE), meta["dim"], meta["nlist"], meta["nprobe"])

    @property
    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe}

    def with_query_effort(self, effort: int) -> FaissIndex:
        """The same cells with another number scanned per query (nprobe is a query-time knob)."""
        return FaissIndex(self.path, self.track_ids, self.dim, self.nlist, effort)

    @classmethod
    def tuned(cls, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int, queries: np.ndarray,
              tuning: Tuning, k: int) -> TunedIndex:
        """One set of cells; only nprobe grows, doubling from `tuning.nprobe` to `tuning.max_nprobe` (it is
        recorded in index.json, not in the file)."""
        index = cls.build(vectors, track_ids, directory, seed, tuning.nlist, tuning.nprobe)
        return _deepen_queries(index, "nprobe", min(tuning.nprobe, tuning.max_nprobe), tuning.max_nprobe, queries,
                               vectors, k, tuning.target_recall)

    def _faiss(self) -> Any:
        if self._index is None:
            import faiss

            self._index = faiss.read_index(str(self.path), faiss.IO_FLAG_MMAP)  # workers on a node share pages
        return self._index

    def query(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k track ids and cosine similarities, best first."""
        ids, cosine = self.query_batch(np.asarray(vector)[None, :], k)
        return ids[0], cosine[0]

    def query_batch(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """All queries in one native call on one thread. Rows with fewer than k neighbours in the scanned cells
        are padded with id MISSING and cosine NaN."""
        index = self._faiss()
        k = min(k, len(self.track_ids))
        queries = np.ascontiguousarray(normalise(np.asarray(vectors, dtype=np.float32)), dtype=np.float32)
        with _one_faiss_thread():
            index.nprobe = min(self.nprobe, self.nlist)
            similarity, rows = index.search(queries, k)
        found = rows >= 0
        ids = np.where(found, self.track_ids[np.maximum(rows, 0)], MISSING)
        return ids, np.where(found, similarity.astype(np.float64), np.nan)


INDEX_CLASSES: dict[str, type[AnnIndex]] = {"annoy": AnnoyIndex, "voyager": VoyagerIndex,
                                             "faiss": FaissIndex}


def backend_class(backend: str) -> type[AnnIndex]:
    """The one place a backend name becomes its implementation."""
    if backend not in INDEX_CLASSES:
        raise ValueError(f"unknown ANN backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return INDEX_CLASSES[backend]


def build_index(backend: str, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int,
                **params: Any) -> AnnIndex:
    """Build the named backend's index of `vectors` (rows) under `directory`; params are the backend's knobs."""
    return backend_class(backend).build(vectors, track_ids, directory, seed=seed, **params)


def load_index(directory: Path) -> AnnIndex:
    """Whatever backend built `directory` (recorded in its index.json); indexes from before it are Annoy."""
    meta = json.loads((directory / META_FILE).read_text())
    return backend_class(meta.get("backend", "annoy")).load(directory)


def index_size_bytes(directory: Path) -> int:
    """Bytes of the index file itself (what a worker maps or loads)."""
    return sum((directory / name).stat().st_size for name in (INDEX_FILE, VOYAGER_FILE, FAISS_FILE)
               if (directory / name).exists())


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k most cosine-similar vectors per query (batched BLAS)."""
    scores = normalise(queries) @ normalise(vectors).T
    k = min(k, vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return top


def recall_at_k(index: AnnIndex, queries: np.ndarray, vectors: np.ndarray, k: int) -> float:
    """Share of the exact top-k neighbours the index returns, averaged over queries.

    `vectors` are the indexed rows, in the order given to `build` (row i is `index.track_ids[i]`).
    """
    truth = exact_top_k(queries, vectors, k)
    found, _ = index.query_batch(queries, k)
    hits = sum(len(np.intersect1d(got, index.track_ids[rows])) for got, rows in zip(found, truth, strict=True))
    return hits / truth.size


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


@dataclass(frozen=True)
class Tuning:
    """How hard an index must try: the recall it must reach on sample queries, and the effort caps."""

    target_recall: float = 0.95
    k: int = 1000
    n_trees: int = 10  # annoy: trees of the first build; doubled until the target is met
    max_trees: int = 320  # annoy: the cap
    search_k: int = -1  # annoy: -1 = n_trees * k (Annoy's default); a fixed value is kept as given
    m: int = 16  # voyager: graph degree
    ef_construction: int = 200  # voyager: build-time search depth
    max_ef: int = 8000  # voyager: query depth cap; starts at k and doubles
    nlist: int = 0  # faiss: inverted-file cells (0: default_nlist of the catalog)
    nprobe: int = 8  # faiss: cells scanned per query at the first try; doubled until the target is met
    max_nprobe: int = 512  # faiss: the cap


@dataclass(frozen=True)
class TunedIndex:
    index: AnnIndex
    recall: float
    attempts: list[dict[str, Any]]

def _deepen_queries(index: AnnIndex, key: str, effort: int, cap: int, queries: np.ndarray, vectors: np.ndarray,
                    k: int, target_recall: float) -> TunedIndex:
    """The built index searched with query effort `key` doubling from `effort` until recall@k on `queries`
    meets the target or the effort reaches `cap`; the effort it stops at is saved in its index.json."""
    attempts: list[dict[str, Any]] = []
    while True:
        index = index.with_query_effort(effort)
        recall = recall_at_k(index, queries, vectors, k)
        attempts.append({key: effort, "recall": recall})
        if recall >= target_recall or effort >= cap:
            _write_meta(index.path.parent, index.backend, index.dim, index.params, index.track_ids)
            return TunedIndex(index, recall, attempts)
        effort = min(2 * effort, cap)



def build_for_recall(backend: str, vectors: np.ndarray, track_ids: np.ndarray, directory: Path, seed: int,
                     queries: np.ndarray, tuning: Tuning) -> TunedIndex:
    """The cheapest index (fewest trees / shallowest search) whose recall@k on `queries` meets the target.

    Stops at the cap and returns the best it got: whether that is good enough is the gate's call, not the
    builder's. Deterministic: the same vectors, queries, seed and tuning give the same index.
    """
    return backend_class(backend).tuned(vectors, track_ids, directory, seed, queries, tuning,
                                        min(tuning.k, len(vectors)))


def mips_to_cosine(item_vectors: np.ndarray, user_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors whose cosine order is the dot-product order (Bachrach et al. 2014): items gain one coordinate
    sqrt(M² - |v|²) so all have norm M, users gain a 0. Lets a cosine index serve ALS's dot-product scores."""
    norms = np.linalg.norm(item_vectors, axis=1)
    extra = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0.0))
    items = np.column_stack([item_vectors, extra]).astype(np.float32)
    users = np.column_stack([user_vectors, np.zeros(len(user_vectors))]).astype(np.float32)
    return items, users
