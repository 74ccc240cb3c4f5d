"""The exploration pool: never-played tracks of the genres a user under-explores, nearest to their taste first.

Exploration slots are drawn from this pool by the re-ranker, each with the propensity of its draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.candidates.retrieval import CatalogView, unheard_head
from pipeline.core import schema as s
from pipeline.core.columns import Columns, take
from pipeline.core.config import RerankConfig
from pipeline.reranking.rules import TRACK_COLUMNS, slot_counts

EXPLORE_POOL_PER_GENRE = 50  # most-played never-heard tracks per under-explored genre
EXPLORE_ARTISTS_PER_SLOT = 4  # exploration pool breadth: artists per exploration slot, at least


def genre_similarity(item_vectors: np.ndarray, item_genres: np.ndarray, genres: list[str]) -> np.ndarray:
    """Genres × genres cosine similarity of the genres' centroids in the ranker's item embedding (negatives → 0).

    The embedding is learnt from co-listening, so genres whose listeners overlap sit close; a genre without
    embedded tracks has similarity 0 to every genre.
    """
    vectors = np.asarray(item_vectors, dtype=float)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    codes = pd.Categorical(np.asarray(item_genres).astype(str), categories=genres).codes
    centroids = np.zeros((len(genres), unit.shape[1]))
    np.add.at(centroids, codes[codes >= 0], unit[codes >= 0])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return np.clip(centroids @ centroids.T, 0.0, None)


def explore_genres(own: np.ndarray, neighbours: np.ndarray, genres: list[str], config: RerankConfig) -> list[str]:
    """The genres exploration may draw from, in order of preference: those holding less than `explore_below_share`
    of the user's completed plays, the most played first, then (among genres the user has not played) the most
    similar to what the user plays (own @ neighbours).

    `own`: the user's (smoothed) share of completed plays per genre; `neighbours`: `genre_similarity`.
    Why weak taste genres come first: docs/decisions/exploration-serves-weak-tastes.md.
    """
    own = np.nan_to_num(np.asarray(own, dtype=float))
    nearness = own @ neighbours
    explorable = np.flatnonzero(own < config.explore_below_share)
    return [genres[g] for g in sorted(explorable.tolist(), key=lambda g: (-own[g], -nearness[g], g))]


def nearest_pool(pool: Columns, ranked_genres: list[str], config: RerankConfig) -> Columns:
    """The pool's tracks of the first `explore_genres` of `ranked_genres`, widened genre by genre while it holds
    fewer than EXPLORE_ARTISTS_PER_SLOT artists per exploration slot (a mix draws distinct artists, minus its own)."""
    n_explore, _, _ = slot_counts(config)
    genre_of = pool[s.GENRE].astype(str)
    chosen: list[str] = []
    artists: set[int] = set()
    for genre in ranked_genres:
        if len(chosen) >= config.explore_genres and len(artists) >= EXPLORE_ARTISTS_PER_SLOT * n_explore:
            break
        chosen.append(genre)
        artists |= set(pool[s.ARTIST_ID][genre_of == genre].tolist())
    return take(pool, np.isin(genre_of, chosen))


@dataclass
class ExplorePool:
    """Builds each user's exploration pool from the catalog view and the genres' nearness in the item embedding."""

    view: CatalogView
    config: RerankConfig

    def __post_init__(self) -> None:
        view = self.view
        embedded = view.embedding_row >= 0
        # Which genres sit next to which in the item embedding: exploration draws from a user's neighbours.
        self.genre_neighbours = genre_similarity(view.item_factors[view.embedding_row[embedded]],
                                                 view.meta[s.GENRE][embedded], view.genres)
        self._genre_order = {genre: i for i, genre in enumerate(view.genres)}

    def __call__(self, genre_affinity: np.ndarray | None, heard: np.ndarray) -> Columns:
        """Never-played, most-played tracks (EXPLORE_POOL_PER_GENRE per genre) of the genres holding less than
        `rerank.explore_below_share` of the user's plays (`explore_genres`, narrowed by `nearest_pool`).

        `genre_affinity`: the user's share of completed plays per genre (None: no profile yet); `heard`: every
        track the user started.
        """
        genres = self.view.genres
        affinity = np.asarray(genre_affinity, dtype=float) if genre_affinity is not None else np.zeros(len(genres))
        nearest = explore_genres(affinity, self.genre_neighbours, genres, self.config)
        parts = self._unheard_heads(nearest, np.unique(heard))
        ordered = [parts[genre] for genre in sorted(parts, key=self._genre_order.__getitem__)]
        pool = {name: np.concatenate([p[name] for p in ordered]) if ordered else np.zeros(0, dtype=object)
                for name in TRACK_COLUMNS[:-1]}
        pool[s.DISCOVERY] = np.ones(len(pool[s.TRACK_ID]), dtype=bool)
        return nearest_pool(pool, nearest, self.config)

    def _unheard_heads(self, ranked_genres: list[str], heard: np.ndarray) -> dict[str, Columns]:
        """Each genre's EXPLORE_POOL_PER_GENRE most played unheard tracks, genre by genre in order of preference,
        only as far as `nearest_pool` looks (it stops once it has `explore_genres` genres and enough artists)."""
        n_explore, _, _ = slot_counts(self.config)
        parts: dict[str, Columns] = {}
        artists: set[int] = set()
        for looked, genre in enumerate(ranked_genres):
            if looked >= self.config.explore_genres and len(artists) >= EXPLORE_ARTISTS_PER_SLOT * n_explore:
                break
            tracks = self.view.genre_tracks.get(genre)
            if tracks is None:
                continue
            parts[genre] = take(tracks, unheard_head(tracks[s.TRACK_ID], heard, EXPLORE_POOL_PER_GENRE))
            artists |= set(parts[genre][s.ARTIST_ID].tolist())
        return parts
