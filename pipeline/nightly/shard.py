"""Nightly generation: plan shards → score each shard → publish → metrics.

A shard, per user: taste clusters from recent completed plays → ANN top-k per cluster →
one batched ranker call → re-ranking into mixes. Shards are independent and deterministic,
so they can run anywhere and be rerun at will.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.candidates.ann import AnnIndex, load_index
from pipeline.candidates.embeddings import Embeddings
from pipeline.candidates.index import index_dir, index_for_model
from pipeline.candidates.taste import TasteCluster, taste_clusters
from pipeline.core import registry
from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_json, atomic_write_parquet_blocks, read_json
from pipeline.core.paths import Layout
from pipeline.data.catalog import read_catalog
from pipeline.data.ingest import read_raw_events
from pipeline.features import store as fs
from pipeline.features.definitions import TRACK_ROW, USER_ROW, pair_features, vocabulary, window_days
from pipeline.reranking.rules import (
    SLOT_COLUMNS,
    TRACK_COLUMNS,
    Columns,
    columns,
    explore_genres,
    genre_similarity,
    nearest_pool,
    rerank_columns,
    take,
)
from pipeline.scoring.compiled import scorer

log = logging.getLogger(__name__)
EXPLORE_POOL_PER_GENRE = 50  # most-played never-heard tracks per under-explored genre
STAGES = ("taste_clusters", "retrieval", "feature_gathering", "scoring", "reranking", "publishing")


@dataclass
class StageClock:
    """CPU and wall seconds spent in each nightly stage; the benchmark reads them, production ignores them."""

    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wall: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu[name] += time.process_time() - cpu
            self.wall[name] += time.perf_counter() - wall


def plan(settings: Settings, day: str) -> str:
    """Pin the model, index and feature versions for the night and split active users into shards."""
    layout = Layout(settings.home)
    model = registry.require_champion(settings)
    index = index_for_model(settings, model.version)
    events = read_raw_events(layout, window_days(day, settings.retrieval.recent_days))
    users = np.sort(events[s.USER_ID].unique())
    shards = [users[users % settings.n_shards == k].tolist() for k in range(settings.n_shards)]
    payload = {
        "date": day,
        "model_name": model.name,
        "model_version": model.version,
        "model_run_id": model.run_id,
        "index_version": index["index_version"],
        "feature_version": fs.feature_version(settings, day),
        "shards": shards,
    }
    path = layout.nightly(day) / "plan.json"
    atomic_write_json(payload, path)
    log.info("plan %s: model v%s, index %s, %d users in %d shards", day, model.version, index["index_version"],
             len(users), settings.n_shards)
    return str(path)


def shard_count(plan_path: str) -> int:
    return len(read_json(Path(plan_path))["shards"])


@dataclass
class ShardContext:
    """What every user of a shard needs, loaded once per shard."""

    settings: Settings
    day: str
    catalog: pd.DataFrame
    embeddings: Embeddings
    index: AnnIndex
    model: object
    history: pd.DataFrame
    users: pd.DataFrame  # online user_profile values, one row per shard user
    tracks: pd.DataFrame  # online track_stats values, one row per catalog track

    def __post_init__(self) -> None:
        # Lookups the per-user loop needs, built once per shard rather than once per user.
        self.track_row = pd.Series(np.arange(len(self.tracks)), index=self.tracks[s.TRACK_ID].to_numpy())
        self.user_row = pd.Series(np.arange(len(self.users)), index=self.users[s.USER_ID].to_numpy())
        self.factors = self.embeddings.lookup()
        self.genres = vocabulary(self.catalog, s.GENRE)
        # History sorted by user (stable): a user's rows are one slice found by binary search, no per-user frames.
        order = np.argsort(self.history[s.USER_ID].to_numpy(), kind="stable")
        history = self.history.iloc[order]
        self.history_users = history[s.USER_ID].to_numpy()
        recent = window_days(self.day, self.settings.retrieval.recent_days)
        start, end = pd.Timestamp(recent[0], tz="UTC"), pd.Timestamp(recent[-1], tz="UTC") + pd.Timedelta(days=1)
        skipped = history[s.SKIPPED].to_numpy(dtype=bool)
        self.history_columns = {s.TRACK_ID: history[s.TRACK_ID].to_numpy(dtype=np.int64), s.SKIPPED: skipped,
                                # completed plays inside the taste window (what taste clusters are built from)
                                "recent_play": ~skipped & ((history[s.TS] >= start) & (history[s.TS] < end)).to_numpy()}
        # Catalog columns by position: a per-user join with the whole catalog cost more than everything else.
        self.catalog_index = pd.Index(self.catalog[s.TRACK_ID].to_numpy())
        self.meta = columns(self.catalog, [s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD])
        plays = self.catalog[s.TRACK_ID].map(self.tracks.set_index(s.TRACK_ID)["plays"]).astype(float).fillna(0.0)
        by_popularity = self.catalog.assign(_plays=plays.to_numpy(), _row=np.arange(len(self.catalog))).sort_values(
            ["_plays", s.TRACK_ID], ascending=[False, True])
        # Per genre, its tracks most played first, as columns and as catalog rows (the explore pool and the genre
        # candidates are cut from their heads).
        by_genre = by_popularity.groupby(s.GENRE, sort=False)
        self.genre_tracks = {str(genre): columns(rows, TRACK_COLUMNS[:-1]) for genre, rows in by_genre}
        self.genre_rows = {str(genre): rows["_row"].to_numpy() for genre, rows in by_genre}
        # Item-embedding row of each catalog row (-1: not embedded, so not in the index either).
        self.embedding_row = pd.Index(self.embeddings.track_ids).get_indexer(self.catalog[s.TRACK_ID].to_numpy())
        # Which genres sit next to which in the item embedding: exploration draws from a user's neighbours.
        embedded = self.embedding_row[self.embedding_row >= 0]
        self.genre_neighbours = genre_similarity(self.embeddings.item_factors[embedded],
                                                 self.catalog[s.GENRE].to_numpy()[self.embedding_row >= 0], self.genres)

    def user_history(self, user: int) -> Columns:
        """The user's events in the history window: track_id, skipped, recent_play."""
        lo = int(np.searchsorted(self.history_users, user, side="left"))
        hi = int(np.searchsorted(self.history_users, user, side="right"))
        return {name: values[lo:hi] for name, values in self.history_columns.items()}


def score_shard(settings: Settings, plan_path: str, shard: int) -> str:
    """Mixes for one shard's users, written to the night's staging area block by block (memory stays flat)."""
    night = read_json(Path(plan_path))
    users = night["shards"][shard]
    context = _load_context(settings, night, users)
    path = Layout(settings.home).nightly(night["date"]) / f"shard-{shard:04d}.parquet"
    n_mixes, n_slots = write_shard(shard_blocks(context, users, night), path)
    log.info("shard %d: %d users, %d mixes, %d slots", shard, len(users), n_mixes, n_slots)
    return str(path)


def shard_blocks(ctx: ShardContext, users: list[int], night: dict,
                 clock: StageClock | None = None) -> Iterator[pd.DataFrame]:
    """The published slots of `users`, one frame per block of `settings.shard.block_users` users.

    Per block: each user's taste clusters and candidates, then one feature build and one ranker call for the
    whole block (their fixed costs are paid once per block, not once per user), then each user's re-ranking.
    """
    clock = clock or StageClock()
    size = ctx.settings.shard.block_users
    for start in range(0, len(users), size):
        yield _block_mixes(ctx, users[start:start + size], night, clock)


def shard_slots(ctx: ShardContext, users: list[int], night: dict, clock: StageClock | None = None) -> pd.DataFrame:
    """All of `users`' slots in one frame (small shards and tests; score_shard streams the blocks)."""
    frames = [f for f in shard_blocks(ctx, users, night, clock) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else _empty_slots()


def write_shard(blocks: Iterable[pd.DataFrame], path: Path, clock: StageClock | None = None) -> tuple[int, int]:
    """Stream blocks of slots into one Parquet file, atomically; (mixes, slots) written."""
    clock = clock or StageClock()
    counts = [0, 0]

    def frames() -> Iterator[pd.DataFrame]:
        for block in blocks:
            with clock.stage("publishing"):
                counts[0] += block[[s.USER_ID, s.MIX_INDEX]].drop_duplicates().shape[0]
                counts[1] += len(block)
            yield block

    atomic_write_parquet_blocks(frames(), path, _empty_slots(), lambda: clock.stage("publishing"))
    return counts[0], counts[1]


def _load_context(settings: Settings, night: dict, users: list[int]) -> ShardContext:
    layout = Layout(settings.home)
    day = night["date"]
    catalog = read_catalog(layout)
    directory = index_dir(settings, night["index_version"])
    embeddings = Embeddings.load(directory / "embeddings.npz")
    model = registry.load_model(settings, registry.ModelRef(night["model_name"], night["model_version"],
                                                            night["model_run_id"]))
    model = scorer(model, len(users), settings.shard.compile_ranker_min_users, layout.compiled_rankers)
    history = read_raw_events(layout, window_days(day, settings.training.window_days * 2))
    history = history.loc[history[s.USER_ID].isin(users)]
    store = fs.feature_store(settings)
    user_features = fs.online(settings, fs.USER_PROFILE, s.USER_ID, users, fs.USER_FEATURES, store)
    track_features = fs.online(settings, fs.TRACK_STATS, s.TRACK_ID, catalog[s.TRACK_ID], fs.TRACK_FEATURES, store)
    return ShardContext(settings, day, catalog, embeddings, load_index(directory), model, history,
                        user_features, track_features)


def _block_mixes(ctx: ShardContext, users: list[int], night: dict, clock: StageClock) -> pd.DataFrame:
    work = []
    for user in users:
        with clock.stage("taste_clusters"):
            history = ctx.user_history(user)
            clusters = _clusters(ctx, history, user)
        if not clusters:
            continue
        with clock.stage("retrieval"):
            work.append((user, history, clusters, _candidates(ctx, clusters, history)))
    if not work:
        return _empty_slots()
    with clock.stage("feature_gathering"):
        features, scored_rows = _block_features(ctx, [(user, candidates) for user, _, _, candidates in work])
    with clock.stage("scoring"):
        scores = ctx.model.predict_proba(features)[:, 1]
    with clock.stage("reranking"):
        mixes = [_rerank(ctx, user, clusters, candidates, history, scores[rows])
                 for (user, history, clusters, candidates), rows in zip(work, scored_rows, strict=True)]
        return _slots_frame(ctx, night, mixes)


def _rerank(ctx: ShardContext, user: int, clusters: list[TasteCluster], candidates: Columns,
            history: Columns, scores: np.ndarray) -> tuple[int, Columns, list[str]]:
    """One user's mixes: (user, slot columns, title of each mix)."""
    cols = {**candidates, s.SCORE: scores}
    rng = np.random.default_rng([ctx.settings.seed, int(ctx.day.replace("-", "")), user])
    slots, of_cluster = rerank_columns(cols, len(clusters), _explore_pool(ctx, user, history), ctx.settings.rerank,
                                       rng, [c.genre for c in clusters])
    return user, slots, [clusters[c].title for c in of_cluster]


def _slots_frame(ctx: ShardContext, night: dict, mixes: list[tuple[int, Columns, list[str]]]) -> pd.DataFrame:
    """One frame for a block's users: their slot columns plus the per-mix and per-night ones."""
    mixes = [m for m in mixes if m[2]]
    if not mixes:
        return _empty_slots()
    data = {name: np.concatenate([slots[name] for _, slots, _ in mixes]) for name in SLOT_COLUMNS}
    # Per slot, from its own mix_index: the user, the mix's title and id.
    data[s.USER_ID] = np.concatenate([np.full(len(slots[s.MIX_INDEX]), user, dtype=np.int64)
                                      for user, slots, _ in mixes])
    data[s.MIX_TITLE] = np.concatenate([np.asarray(titles, dtype=object)[slots[s.MIX_INDEX]]
                                        for _, slots, titles in mixes])
    data[s.MIX_ID] = np.array([s.mix_id(ctx.day, user, index) for user, index in zip(data[s.USER_ID].tolist(),
                                                                                      data[s.MIX_INDEX].tolist(),
                                                                                      strict=True)], dtype=object)
    frame = pd.DataFrame(data).assign(**{s.DATE: ctx.day, s.MODEL_VERSION: night["model_version"],
                                         s.INDEX_VERSION: night["index_version"],
                                         s.FEATURE_VERSION: night["feature_version"]})
    return frame[list(s.PUBLISHED_COLUMNS)].astype(s.PUBLISHED_DTYPES)


def _clusters(ctx: ShardContext, history: Columns, user: int) -> list[TasteCluster]:
    rows = ctx.catalog_index.get_indexer(history[s.TRACK_ID][history["recent_play"]])
    _, item_factors, _, item_row = ctx.factors
    return taste_clusters(take(ctx.meta, rows[rows >= 0]), item_factors, item_row, ctx.settings.rerank,
                          ctx.settings.seed)


def _candidates(ctx: ShardContext, clusters: list[TasteCluster], history: Columns) -> Columns:
    """Each cluster's candidates — its ANN neighbours, then its genre's own tracks (`_genre_candidates`) — minus
    tracks the user keeps skipping: TRACK_COLUMNS, cluster and retrieval_score (cosine to the cluster's query).

    Cheap first pass: per cluster only the `shard.rank_per_cluster` never-played ANN neighbours with the best
    retrieval score reach the ranker; tracks the user knows and the genre's own candidates always do.
    """
    heard = history[s.TRACK_ID]
    played = _played_through(ctx, history)
    ids, similarity, cluster, own_genre = [], [], [], []
    for c, taste in enumerate(clusters):
        neighbours, cosine = ctx.index.query(taste.query, ctx.settings.retrieval.candidates_per_cluster)
        extra, extra_cosine = _genre_candidates(ctx, taste, played, heard, exclude=neighbours)
        ids += [np.asarray(neighbours, dtype=np.int64), extra]
        similarity += [np.asarray(cosine, dtype=float), extra_cosine]
        cluster.append(np.full(len(neighbours) + len(extra), c))
        own_genre += [np.zeros(len(neighbours), dtype=bool), np.ones(len(extra), dtype=bool)]
    track_ids, similarity = np.concatenate(ids), np.concatenate(similarity)
    cluster, own_genre = np.concatenate(cluster), np.concatenate(own_genre)
    rows = ctx.catalog_index.get_indexer(track_ids)
    keep = (rows >= 0) & ~np.isin(track_ids, _disliked(heard, history[s.SKIPPED]))
    known = np.isin(track_ids, heard)
    ranked = keep & ~known & ~own_genre
    keep &= ~ranked | (_rank_within(cluster, ranked) < ctx.settings.shard.rank_per_cluster)
    meta = take(ctx.meta, rows[keep])
    return {s.TRACK_ID: track_ids[keep], "cluster": cluster[keep], "retrieval_score": similarity[keep],
            s.ARTIST_ID: meta[s.ARTIST_ID], s.GENRE: meta[s.GENRE], s.MOOD: meta[s.MOOD], s.DISCOVERY: ~known[keep]}


def _played_through(ctx: ShardContext, history: Columns) -> dict[str, np.ndarray]:
    """The catalog rows of the distinct tracks the user played through in the taste window, and their genre."""
    rows = ctx.catalog_index.get_indexer(np.unique(history[s.TRACK_ID][history["recent_play"]]))
    rows = rows[rows >= 0]
    return {"row": rows, s.GENRE: ctx.meta[s.GENRE][rows]}


def _genre_candidates(ctx: ShardContext, taste: TasteCluster, played: dict[str, np.ndarray], heard: np.ndarray,
                      exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mix's candidates from its own genre, whatever the embedding says: the genre's tracks the user played
    through, and its `retrieval.genre_candidates` most played tracks the user has never played. Only embedded
    tracks (those the index holds), none of `exclude`. Returns (track ids, cosine to the cluster's query: the
    retrieval score ANN would have given).

    Needed because ANN neighbours of a small genre's centroid are mostly a bigger genre the same listeners play:
    on the first night of the closed-loop simulation a small genre's mix held 27-60% of its genre, its plays fell
    below `min_cluster_share` and the mix was gone for good (a taste genre lost, with or without exploration).
    """
    favourites = played["row"][played[s.GENRE] == taste.genre]
    popular = ctx.genre_rows.get(taste.genre, np.zeros(0, dtype=np.int64))
    head = _unheard_head(ctx.meta[s.TRACK_ID][popular], heard, ctx.settings.retrieval.genre_candidates)
    rows = np.concatenate([favourites, popular[head]]).astype(np.int64)
    vector_rows = ctx.embedding_row[rows]
    track_ids = ctx.meta[s.TRACK_ID][rows].astype(np.int64)
    keep = (vector_rows >= 0) & ~np.isin(track_ids, exclude)
    vectors = ctx.embeddings.item_factors[vector_rows[keep]]
    cosine = vectors @ taste.query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    return track_ids[keep], cosine


def _unheard_head(ranked_ids: np.ndarray, heard: np.ndarray, n: int) -> np.ndarray:
    """Positions of the first `n` of `ranked_ids` the user has not heard. At most len(heard) of them are heard,
    so only the first n + len(heard) are looked at."""
    head = ranked_ids[:n + len(heard)]
    return np.flatnonzero(~np.isin(head, heard))[:n]


def _rank_within(groups: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """0-based rank of each `counted` row among the counted rows of its (contiguous) group; others get 0."""
    ranks = np.zeros(len(groups), dtype=np.int64)
    for group in np.unique(groups):
        members = groups == group
        ranks[members] = np.cumsum(counted[members]) - 1
    return np.where(counted, ranks, 0)


def _disliked(tracks: np.ndarray, skipped: np.ndarray) -> np.ndarray:
    """Tracks skipped at least twice and never played through: not eligible."""
    ids, of_event = np.unique(tracks, return_inverse=True)
    skips = np.bincount(of_event, weights=skipped, minlength=len(ids))
    return ids[(skips >= 2) & (skips == np.bincount(of_event, minlength=len(ids)))]


def _block_features(ctx: ShardContext, work: list[tuple[int, Columns]]) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Ranker inputs for every (user, distinct candidate) of a block in one `pair_features` call, and per user
    the feature row of each candidate (a track several clusters retrieved is scored once)."""
    users, tracks, known, rows, offset = [], [], [], [], 0
    for user, candidates in work:
        distinct, first, codes = np.unique(candidates[s.TRACK_ID], return_index=True, return_inverse=True)
        users.append(np.full(len(distinct), user, dtype=np.int64))
        tracks.append(distinct)
        known.append(~candidates[s.DISCOVERY][first])
        rows.append(codes + offset)
        offset += len(distinct)
    block_users, block_tracks = np.concatenate(users), np.concatenate(tracks)
    block = pd.DataFrame({
        s.USER_ID: block_users, s.TRACK_ID: block_tracks, "known": np.concatenate(known),
        USER_ROW: ctx.user_row.reindex(block_users).fillna(-1).to_numpy(dtype=np.int64),
        TRACK_ROW: ctx.track_row.reindex(block_tracks).to_numpy(),
    })
    return pair_features(block, ctx.users, ctx.tracks, ctx.catalog, ctx.factors, ctx.day), rows


def _features(ctx: ShardContext, user: int, candidates: Columns) -> pd.DataFrame:
    """Ranker inputs of one user's candidates, a row per candidate (the benchmark's scoring curve uses it)."""
    features, (rows,) = _block_features(ctx, [(user, candidates)])
    return features.iloc[rows].reset_index(drop=True)


def _explore_pool(ctx: ShardContext, user: int, history: Columns) -> Columns:
    """Never-played, most-played tracks (EXPLORE_POOL_PER_GENRE per genre) of the genres holding less than
    `rerank.explore_below_share` of the user's plays (`explore_genres`, narrowed by `nearest_pool`)."""
    genres = ctx.genres
    row = ctx.user_row.get(user)
    vector = ctx.users["genre_affinity"].iloc[row] if row is not None else None
    affinity = np.asarray(vector, dtype=float) if vector is not None else np.zeros(len(genres))
    nearest = explore_genres(affinity, ctx.genre_neighbours, genres, ctx.settings.rerank)
    heard = np.unique(history[s.TRACK_ID])
    parts = []
    for genre in genres:
        tracks = ctx.genre_tracks.get(genre)
        if genre not in nearest or tracks is None:
            continue
        parts.append(take(tracks, _unheard_head(tracks[s.TRACK_ID], heard, EXPLORE_POOL_PER_GENRE)))
    pool = {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0, dtype=object)
            for name in TRACK_COLUMNS[:-1]}
    pool[s.DISCOVERY] = np.ones(len(pool[s.TRACK_ID]), dtype=bool)
    return nearest_pool(pool, nearest, ctx.settings.rerank)


def _empty_slots() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=s.PUBLISHED_DTYPES[column]) for column in s.PUBLISHED_COLUMNS})
