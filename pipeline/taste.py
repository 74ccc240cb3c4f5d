"""A user's listening split into taste clusters: one query vector and one mix each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import schema as s
from pipeline.ann import normalise
from pipeline.config import RerankConfig

KMEANS_RESTARTS = 4  # best of this many seeded k-means++ starts
KMEANS_MAX_ITER = 100


@dataclass(frozen=True)
class TasteCluster:
    query: np.ndarray  # unit-length centroid of the cluster's track vectors
    weight: float  # share of the user's recent plays in the cluster
    genre: str  # dominant genre of the cluster's plays
    mood: str  # dominant mood of the cluster's plays

    @property
    def title(self) -> str:
        return f"{self.genre.title()} · {self.mood}"


def number_of_clusters(genres: pd.Series | np.ndarray, config: RerankConfig, n_distinct: int) -> int:
    """One mix per genre holding at least `min_cluster_share` of plays: narrow tastes get fewer."""
    values = np.asarray(genres)
    _, counts = np.unique(values, return_counts=True) if len(values) else (None, np.zeros(0))
    broad = int((counts / max(1, len(values)) >= config.min_cluster_share).sum())
    return max(1, min(broad, config.max_mixes, n_distinct))


def weighted_kmeans(points: np.ndarray, weights: np.ndarray, k: int, seed: int, restarts: int = KMEANS_RESTARTS,
                    max_iter: int = KMEANS_MAX_ITER) -> np.ndarray:
    """Cluster labels of weighted Lloyd's k-means: k-means++ seeding, best of `restarts` by weighted inertia.

    Written for small inputs (a user's distinct recent tracks, run once per user each night): sklearn's KMeans
    gives the same kind of answer but spends most of a call on validation and thread-pool set-up.
    """
    if k >= len(points):
        return np.arange(len(points))
    rng = np.random.default_rng(seed)
    squared = np.einsum("ij,ij->i", points, points)
    best, best_inertia = np.zeros(len(points), dtype=np.int64), np.inf
    for _ in range(restarts):
        labels, inertia = _lloyd(points, squared, weights, _plus_plus(points, squared, weights, k, rng), max_iter)
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _distances(points: np.ndarray, squared: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of every point to every centre (n × k)."""
    return np.maximum(squared[:, None] - 2 * points @ centres.T + np.einsum("ij,ij->i", centres, centres), 0.0)


def _plus_plus(points: np.ndarray, squared: np.ndarray, weights: np.ndarray, k: int,
               rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability ∝ weight × squared distance to the nearest."""
    chosen = [int(rng.choice(len(points), p=weights / weights.sum()))]
    nearest = _distances(points, squared, points[chosen])[:, 0]
    for _ in range(1, k):
        mass = weights * nearest
        # All points already on a centre (duplicated vectors): any unchosen point will do.
        p = mass / mass.sum() if mass.sum() > 0 else np.isin(np.arange(len(points)), chosen, invert=True) / (
            len(points) - len(chosen))
        chosen.append(int(rng.choice(len(points), p=p)))
        nearest = np.minimum(nearest, _distances(points, squared, points[chosen[-1:]])[:, 0])
    return points[chosen].astype(float)


def _lloyd(points: np.ndarray, squared: np.ndarray, weights: np.ndarray, centres: np.ndarray,
           max_iter: int) -> tuple[np.ndarray, float]:
    """Lloyd iterations until no point changes cluster; (labels, weighted inertia). An emptied cluster keeps
    its centre."""
    labels = np.full(len(points), -1)
    for _ in range(max_iter):
        distances = _distances(points, squared, centres)
        new = distances.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        membership = np.zeros((len(centres), len(points)))
        membership[labels, np.arange(len(points))] = weights
        mass = membership.sum(axis=1)
        filled = mass > 0
        centres[filled] = (membership[filled] @ points) / mass[filled, None]
    inertia = float(weights @ distances[np.arange(len(points)), labels])
    return labels, inertia


def taste_clusters(plays: pd.DataFrame | dict[str, np.ndarray], item_vectors: np.ndarray, item_row: dict[int, int],
                   config: RerankConfig, seed: int) -> list[TasteCluster]:
    """Weighted k-means over the embeddings of the tracks a user completed recently (weight = plays).

    `plays` has track_id, genre, mood columns (one row per completed play). Largest cluster first.
    """
    tracks = np.asarray(plays[s.TRACK_ID])
    # Membership by dict lookup: `isin(item_row.keys())` would hash the whole catalog on every call.
    known = np.fromiter((int(t) in item_row for t in tracks), dtype=bool, count=len(tracks))
    if not known.any():
        return []
    tracks, genres, moods = tracks[known], np.asarray(plays[s.GENRE])[known], np.asarray(plays[s.MOOD])[known]
    distinct, of_play, counts = np.unique(tracks, return_inverse=True, return_counts=True)
    vectors = normalise(item_vectors[[item_row[int(t)] for t in distinct]])
    k = number_of_clusters(genres, config, len(distinct))
    labels = weighted_kmeans(vectors, counts.astype(float), k, seed)
    play_labels = labels[of_play]
    clusters = []
    for label in np.unique(labels):
        in_cluster = labels == label
        members = play_labels == label
        centroid = np.average(vectors[in_cluster], axis=0, weights=counts[in_cluster])
        clusters.append(TasteCluster(query=normalise(centroid), weight=members.sum() / len(tracks),
                                     genre=_most_common(genres[members]), mood=_most_common(moods[members])))
    return sorted(clusters, key=lambda c: (-c.weight, c.genre, c.mood))


def _most_common(values: np.ndarray) -> str:
    """The most frequent value; ties go to the alphabetically first."""
    distinct, counts = np.unique(values.astype(str), return_counts=True)
    return str(distinct[np.argmax(counts)])
