"""A user's listening split into taste clusters: one query vector and one mix each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.candidates.ann import normalise
from pipeline.core import schema as s
from pipeline.core.config import RerankConfig


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
    return _clusters_for(np.unique(np.asarray(genres), return_counts=True)[1], config, n_distinct)


def _clusters_for(plays_per_genre: np.ndarray, config: RerankConfig, n_distinct: int) -> int:
    shares = plays_per_genre / max(1, plays_per_genre.sum())
    return max(1, min(int((shares >= config.min_cluster_share).sum()), config.max_mixes, n_distinct))


def genre_labels(genre_of: np.ndarray, weights: np.ndarray, vectors: np.ndarray, top: list[str]) -> np.ndarray:
    """Cluster of each track: its genre's index in `top`, else the `top` genre whose play-weighted centroid is
    nearest (cosine). `vectors` are unit rows; `genre_of`/`weights` per row.

    number_of_clusters counts genres, so the clusters are those genres (docs/decisions/taste-clusters-by-genre.md).
    """
    own = pd.Index(top).get_indexer(genre_of)
    centroids = normalise(np.vstack([np.average(vectors[own == i], axis=0, weights=weights[own == i])
                                     for i in range(len(top))]))
    return np.where(own >= 0, own, np.argmax(vectors @ centroids.T, axis=1))


def taste_clusters(plays: pd.DataFrame | dict[str, np.ndarray], item_vectors: np.ndarray, item_row: dict[int, int],
                   config: RerankConfig, seed: int) -> list[TasteCluster]:
    """One cluster per genre holding `min_cluster_share` of the user's recent completed plays (`genre_labels`).

    `plays` has track_id, genre, mood columns (one row per completed play). Largest cluster first. `seed` is
    unused: the assignment is deterministic (the signature is the nightly's).
    """
    tracks = np.asarray(plays[s.TRACK_ID])
    # Membership by dict lookup: `isin(item_row.keys())` would hash the whole catalog on every call.
    known = np.fromiter((int(t) in item_row for t in tracks), dtype=bool, count=len(tracks))
    if not known.any():
        return []
    tracks, genres, moods = tracks[known], np.asarray(plays[s.GENRE])[known], np.asarray(plays[s.MOOD])[known]
    distinct, first, of_play, counts = np.unique(tracks, return_index=True, return_inverse=True, return_counts=True)
    vectors = normalise(item_vectors[[item_row[int(t)] for t in distinct]])
    names, plays_per_genre = np.unique(genres.astype(str), return_counts=True)
    k = _clusters_for(plays_per_genre, config, len(distinct))
    top = [str(names[i]) for i in np.lexsort((names, -plays_per_genre))[:k]]  # most played; ties: genre name
    labels = genre_labels(genres[first].astype(str), counts.astype(float), vectors, top)
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
