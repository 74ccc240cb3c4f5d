"""Stage 1, candidates: a user's taste clusters, then per cluster its ANN neighbours and its genre's own tracks.

Works on an explicit catalog view (`CatalogView`, built once per shard) and a user's history as column arrays;
it knows nothing of shards, scoring or mixes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.candidates.ann import AnnIndex
from pipeline.candidates.embeddings import Embeddings
from pipeline.candidates.taste import TasteCluster, taste_clusters
from pipeline.core import schema as s
from pipeline.core.columns import Columns, columns, take
from pipeline.core.config import RerankConfig, RetrievalConfig
from pipeline.features.definitions import vocabulary

# (track ids, cosines), one row per query; id MISSING and cosine NaN pad rows a search could not fill
Neighbours = tuple[np.ndarray, np.ndarray]
RECENT_PLAY = "recent_play"  # history column: a completed play inside the taste window
CATALOG_META = [s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD]


@dataclass
class CatalogView:
    """What the per-user stages need of the catalog, by catalog row: metadata, each genre's tracks most played
    first, and each track's row in the item embedding (-1: not embedded, so not in the index either)."""

    meta: Columns
    catalog_index: pd.Index
    genres: list[str]
    genre_rows: dict[str, np.ndarray]
    genre_tracks: dict[str, Columns]
    embedding_row: np.ndarray
    embeddings: Embeddings

    @classmethod
    def build(cls, catalog: pd.DataFrame, embeddings: Embeddings, plays: pd.Series) -> CatalogView:
        """`plays`: the tracks' play counts indexed by track id (online track_stats); missing tracks count 0."""
        counts = catalog[s.TRACK_ID].map(plays).astype(float).fillna(0.0)
        by_popularity = catalog.assign(_plays=counts.to_numpy(), _row=np.arange(len(catalog))).sort_values(
            ["_plays", s.TRACK_ID], ascending=[False, True])
        by_genre = by_popularity.groupby(s.GENRE, sort=False)
        return cls(
            meta=columns(catalog, CATALOG_META),
            catalog_index=pd.Index(catalog[s.TRACK_ID].to_numpy()),
            genres=vocabulary(catalog, s.GENRE),
            genre_rows={str(genre): rows["_row"].to_numpy() for genre, rows in by_genre},
            genre_tracks={str(genre): columns(rows, CATALOG_META) for genre, rows in by_genre},
            embedding_row=pd.Index(embeddings.track_ids).get_indexer(catalog[s.TRACK_ID].to_numpy()),
            embeddings=embeddings,
        )

    @property
    def item_factors(self) -> np.ndarray:
        return self.embeddings.item_factors


@dataclass
class CandidateSource:
    """A user's taste clusters and each cluster's candidates: TRACK_ID, ARTIST_ID, GENRE, MOOD, DISCOVERY, cluster
    and retrieval_score (cosine to the cluster's query), minus tracks the user keeps skipping.

    Cheap first pass: per cluster only the `rank_per_cluster` never-played ANN neighbours with the best retrieval
    score go on; tracks the user knows and the genre's own candidates always do.
    """

    view: CatalogView
    index: AnnIndex
    retrieval: RetrievalConfig
    taste: RerankConfig
    rank_per_cluster: int
    seed: int

    def __post_init__(self) -> None:
        _, _, _, self._item_row = self.view.embeddings.lookup()

    def clusters(self, history: Columns) -> list[TasteCluster]:
        """Taste clusters of the user's completed plays in the taste window (`history[RECENT_PLAY]`)."""
        rows = self.view.catalog_index.get_indexer(history[s.TRACK_ID][history[RECENT_PLAY]])
        return taste_clusters(take(self.view.meta, rows[rows >= 0]), self.view.item_factors, self._item_row,
                              self.taste, self.seed)

    def neighbours(self, clusters: list[TasteCluster]) -> Neighbours:
        """Every cluster's `candidates_per_cluster` ANN neighbours in one batched index call (clusters of a whole
        block of users at once: backends that search a matrix pay their fixed costs once)."""
        if not clusters:
            return np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0))
        queries = np.vstack([taste.query for taste in clusters])
        return self.index.query_batch(queries, self.retrieval.candidates_per_cluster)

    def candidates(self, clusters: list[TasteCluster], history: Columns,
                   neighbours: Neighbours | None = None) -> Columns:
        """Each cluster's ANN neighbours, then its genre's own tracks (`genre_candidates`), one row per
        (cluster, track); `history`: the user's events (TRACK_ID, SKIPPED, RECENT_PLAY). `neighbours`: the
        clusters' rows of a block's `neighbours` call (searched here when not given)."""
        heard = history[s.TRACK_ID]
        played = self._played_through(history)
        found_ids, found_cosine = neighbours if neighbours is not None else self.neighbours(clusters)
        ids, similarity, cluster, own_genre = [], [], [], []
        for c, taste in enumerate(clusters):
            near, cosine = found_ids[c], found_cosine[c]
            extra, extra_cosine = self.genre_candidates(taste, played, heard, exclude=near)
            ids += [np.asarray(near, dtype=np.int64), extra]
            similarity += [np.asarray(cosine, dtype=float), extra_cosine]
            cluster.append(np.full(len(near) + len(extra), c))
            own_genre += [np.zeros(len(near), dtype=bool), np.ones(len(extra), dtype=bool)]
        track_ids, similarity = np.concatenate(ids), np.concatenate(similarity)
        cluster, own_genre = np.concatenate(cluster), np.concatenate(own_genre)
        rows = self.view.catalog_index.get_indexer(track_ids)
        keep = (rows >= 0) & ~np.isin(track_ids, disliked(heard, history[s.SKIPPED]))
        known = np.isin(track_ids, heard)
        ranked = keep & ~known & ~own_genre
        keep &= ~ranked | (rank_within(cluster, ranked) < self.rank_per_cluster)
        meta = take(self.view.meta, rows[keep])
        return {s.TRACK_ID: track_ids[keep], "cluster": cluster[keep], "retrieval_score": similarity[keep],
                s.ARTIST_ID: meta[s.ARTIST_ID], s.GENRE: meta[s.GENRE], s.MOOD: meta[s.MOOD],
                s.DISCOVERY: ~known[keep]}

    def genre_candidates(self, taste: TasteCluster, played: Columns, heard: np.ndarray,
                         exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A mix's candidates from its own genre, whatever the embedding says: the genre's tracks the user played
        through, and its `retrieval.genre_candidates` most played tracks the user has never played. Only embedded
        tracks (those the index holds), none of `exclude`. Returns (track ids, cosine to the cluster's query: the
        retrieval score ANN would have given). Why: docs/decisions/genre-candidates.md.
        """
        view = self.view
        favourites = played["row"][played[s.GENRE] == taste.genre]
        popular = view.genre_rows.get(taste.genre, np.zeros(0, dtype=np.int64))
        head = unheard_head(view.meta[s.TRACK_ID][popular], heard, self.retrieval.genre_candidates)
        rows = np.concatenate([favourites, popular[head]]).astype(np.int64)
        vector_rows = view.embedding_row[rows]
        track_ids = view.meta[s.TRACK_ID][rows].astype(np.int64)
        keep = (vector_rows >= 0) & ~np.isin(track_ids, exclude)
        vectors = view.item_factors[vector_rows[keep]]
        cosine = vectors @ taste.query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        return track_ids[keep], cosine

    def _played_through(self, history: Columns) -> Columns:
        """The catalog rows of the distinct tracks the user played through in the taste window, and their genre."""
        rows = self.view.catalog_index.get_indexer(np.unique(history[s.TRACK_ID][history[RECENT_PLAY]]))
        rows = rows[rows >= 0]
        return {"row": rows, s.GENRE: self.view.meta[s.GENRE][rows]}


def unheard_head(ranked_ids: np.ndarray, heard: np.ndarray, n: int) -> np.ndarray:
    """Positions of the first `n` of `ranked_ids` the user has not heard. At most len(heard) of them are heard,
    so only the first n + len(heard) are looked at."""
    head = ranked_ids[:n + len(heard)]
    return np.flatnonzero(~np.isin(head, heard))[:n]


def rank_within(groups: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """0-based rank of each `counted` row among the counted rows of its (contiguous) group; others get 0."""
    ranks = np.zeros(len(groups), dtype=np.int64)
    for group in np.unique(groups):
        members = groups == group
        ranks[members] = np.cumsum(counted[members]) - 1
    return np.where(counted, ranks, 0)


def disliked(tracks: np.ndarray, skipped: np.ndarray) -> np.ndarray:
    """Tracks skipped at least twice and never played through: not eligible."""
    ids, of_event = np.unique(tracks, return_inverse=True)
    skips = np.bincount(of_event, weights=skipped, minlength=len(ids))
    return ids[(skips >= 2) & (skips == np.bincount(of_event, minlength=len(ids)))]
