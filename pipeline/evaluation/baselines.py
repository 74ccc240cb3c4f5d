"""The baselines the platform must beat, each tuned on a validation split of the training data, never the test.

Every baseline turns a training matrix (users × items; `Interactions` holds it binary and as play counts) and a
parameter dict into a dense users × items score matrix. `tune` tries each setting of a baseline's grid on a
validation split carved from the training rows (`offline.resplit`), keeps the one with the best NDCG@10 there,
and refits it on the whole training split. `QUICK` holds settings a full tuning run chose, for short runs.

* `popularity` — training listeners per item.
* `als` — implicit ALS; confidence from BM25 on the binary matrix or log-scaled play counts.
* `itemknn` — item-item cosine on (optionally BM25-weighted) columns, pruned to each item's k nearest.
* `ease` — EASE (Steck 2019): the closed-form item-item regression B = I - P / diag(P), P = (XᵀX + λI)⁻¹, on the
  items with at least two training listeners (the others cannot be learnt from co-listening).
* `rp3beta` — RP3beta (Paudel et al. 2017): three-step random walk user → item → user → item, transition
  probabilities raised to α, the arrival item's popularity divided out to the power β, pruned to top k.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix, diags

log = logging.getLogger(__name__)

UNSCORED = -1e9  # score of an item a baseline cannot rank (behind every scored one, still ahead of seen ones)


@dataclass(frozen=True)
class Interactions:
    """A training matrix twice: binary (who listened) and play counts (how much), same shape and pattern."""

    binary: csr_matrix
    plays: csr_matrix

    @classmethod
    def of(cls, binary: csr_matrix, plays: csr_matrix | None = None) -> Interactions:
        return cls(binary, binary if plays is None else plays)


# --- the models ---------------------------------------------------------------------------------------------------


def popularity(data: Interactions, params: dict, seed: int) -> np.ndarray:
    """Training listeners per item, the same for every user."""
    counts = np.asarray(data.binary.sum(axis=0), dtype=np.float64).ravel()
    return np.broadcast_to(counts, data.binary.shape)


def bm25(matrix: csr_matrix) -> csr_matrix:
    """implicit's BM25 weighting (K1 = 100, B = 0.8), as the platform's ALS uses it."""
    from implicit.nearest_neighbours import bm25_weight

    return bm25_weight(matrix, K1=100, B=0.8).tocsr().astype(np.float32)


def confidence(data: Interactions, weighting: str, alpha: float = 1.0) -> csr_matrix:
    """ALS confidence: "bm25" (BM25 on the binary matrix) or "log" (alpha × log1p of the play counts)."""
    if weighting == "bm25":
        return bm25(data.binary)
    if weighting == "log":
        weighted = data.plays.astype(np.float32).tocsr(copy=True)
        weighted.data = alpha * np.log1p(weighted.data)
        return weighted
    raise ValueError(f"unknown ALS weighting {weighting!r}: expected 'bm25' or 'log'")


def als_vectors(data: Interactions, params: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors, item vectors) of implicit ALS with `params` (factors, regularization, weighting, alpha)."""
    import implicit.als
    from threadpoolctl import threadpool_limits

    model = implicit.als.AlternatingLeastSquares(
        factors=params["factors"], regularization=params["regularization"], iterations=params.get("iterations", 15),
        random_state=seed, num_threads=1, calculate_training_loss=False)
    with threadpool_limits(1, "blas"):  # implicit's advice: its own loop is the parallelism
        model.fit(confidence(data, params["weighting"], params.get("alpha", 1.0)), show_progress=False)
    return np.asarray(model.user_factors, dtype=np.float32), np.asarray(model.item_factors, dtype=np.float32)


def als(data: Interactions, params: dict, seed: int) -> np.ndarray:
    users, items = als_vectors(data, params, seed)
    return users @ items.T


def keep_top_k(similarity: np.ndarray, k: int | None) -> np.ndarray:
    """Each column's k largest entries kept (the rest zeroed): every item keeps its k nearest neighbours."""
    if k is None or k >= similarity.shape[0]:
        return similarity
    cut = np.partition(similarity, -k, axis=0)[-k]
    return np.where(similarity >= cut[None, :], similarity, 0.0)


def itemknn(data: Interactions, params: dict, seed: int) -> np.ndarray:
    """Σ over the user's items of cosine(item, candidate), each candidate's k nearest items only."""
    weighted = bm25(data.binary) if params["weighting"] == "bm25" else data.binary.astype(np.float32)
    items = listened_items(data.binary, 2)
    columns = weighted[:, items].toarray()
    norms = np.maximum(np.linalg.norm(columns, axis=0), 1e-12)
    similarity = (columns.T @ columns) / np.outer(norms, norms)
    np.fill_diagonal(similarity, 0.0)
    return _on_items(weighted[:, items] @ keep_top_k(similarity, params["k"]), items, data.binary.shape)


def listened_items(binary: csr_matrix, min_listeners: int) -> np.ndarray:
    """Item indices with at least `min_listeners` training listeners."""
    return np.flatnonzero(np.asarray(binary.sum(axis=0)).ravel() >= min_listeners)


def _on_items(scores: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scores of a model fitted on the `items` columns, back on every column (the rest UNSCORED)."""
    full = np.full(shape, UNSCORED, dtype=np.float64)
    full[:, items] = scores
    return full


def ease_weights(matrix: np.ndarray, regularization: float) -> np.ndarray:
    """EASE's item-item weights B: argmin ‖X - XB‖² + λ‖B‖² subject to diag(B) = 0, in closed form."""
    gram = matrix.T @ matrix
    gram[np.diag_indices_from(gram)] += regularization
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def ease(data: Interactions, params: dict, seed: int) -> np.ndarray:
    items = listened_items(data.binary, 2)
    matrix = data.binary if params["weighting"] == "binary" else bm25(data.binary)
    dense = matrix[:, items].toarray().astype(np.float32)  # single precision: λ keeps the Gram well conditioned
    return _on_items(dense @ ease_weights(dense, params["regularization"]), items, data.binary.shape)


def rp3beta_weights(binary: csr_matrix, alpha: float, beta: float) -> np.ndarray:
    """Item → item transition of a walk item → user → item, each step's probability to the power α, divided by
    the arrival item's popularity to the power β (dense, items × items)."""
    user_degree = np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1)
    item_degree = np.maximum(np.asarray(binary.sum(axis=0)).ravel(), 1)
    to_item = diags(1.0 / user_degree) @ binary  # P(item | user)
    to_user = (diags(1.0 / item_degree) @ binary.T.tocsr())  # P(user | item)
    to_item.data **= alpha
    to_user.data **= alpha
    walk = (to_user @ to_item).toarray()
    return walk / (item_degree[None, :] ** beta)


def rp3beta(data: Interactions, params: dict, seed: int) -> np.ndarray:
    items = listened_items(data.binary, 2)
    binary = data.binary[:, items].astype(np.float64).tocsr()
    weights = rp3beta_weights(binary, params["alpha"], params["beta"])
    np.fill_diagonal(weights, 0.0)
    # The walk's first step (1/deg(user))^α is the same for all of a user's items: it scales, never reorders.
    return _on_items(binary @ keep_top_k(weights.T, params["k"]).T, items, data.binary.shape)


# --- tuning -------------------------------------------------------------------------------------------------------


Fit = Callable[[Interactions, dict, int], np.ndarray]


def grid(**axes: list) -> list[dict]:
    """Every combination of the axes' values, as parameter dicts."""
    names = list(axes)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]


@dataclass(frozen=True)
class Baseline:
    """A baseline's model, the settings tuning tries and the setting short runs use."""

    fit: Fit
    settings: list[dict] = field(default_factory=lambda: [{}])
    quick: dict = field(default_factory=dict)


BASELINES: dict[str, Baseline] = {
    "popularity": Baseline(popularity),
    "als": Baseline(als, grid(factors=[64, 128], regularization=[3.0, 10.0, 30.0], weighting=["bm25", "log"]),
                    {"factors": 128, "regularization": 30.0, "weighting": "bm25"}),
    "itemknn": Baseline(itemknn, grid(weighting=["binary", "bm25"], k=[50, 200, None]),
                        {"weighting": "binary", "k": None}),
    "ease": Baseline(ease, grid(weighting=["binary"], regularization=[30.0, 100.0, 300.0])
                     + grid(weighting=["bm25"], regularization=[3e3, 1e4, 3e4]),
                     {"weighting": "bm25", "regularization": 3e3}),
    "rp3beta": Baseline(rp3beta, grid(alpha=[0.5, 0.75, 1.0], beta=[0.2, 0.35, 0.5], k=[None]),
                        {"alpha": 0.75, "beta": 0.35, "k": None}),
}


@dataclass(frozen=True)
class Tuned:
    """A baseline's chosen setting, the validation NDCG@10 of each setting tried, and the chosen setting's scores
    fitted on the validation training rows and on the whole training split."""

    params: dict
    validation: list[tuple[dict, float]]
    validation_scores: np.ndarray
    scores: np.ndarray


def tune(baseline: Baseline, train: Interactions, validation: Interactions, judge: Callable[[np.ndarray], float],
         seed: int, quick: bool = False) -> Tuned:
    """The setting with the best `judge` (NDCG@10 on the validation hold-out; ties: the first in the grid), then
    fitted on the whole training split. Quick runs take `baseline.quick` without trying anything else."""
    settings = [dict(baseline.quick)] if quick else baseline.settings
    tried, best, best_scores = [], -np.inf, None
    for params in settings:
        scores = baseline.fit(validation, params, seed)
        value = judge(scores) if len(settings) > 1 else float("nan")
        tried.append((params, value))
        if len(settings) > 1:
            log.info("validation NDCG@10 %.4f with %s", value, params)
        if best_scores is None or value > best:
            best, best_scores, chosen = value, scores, params
    return Tuned(chosen, tried if len(settings) > 1 else [], best_scores, baseline.fit(train, chosen, seed))
