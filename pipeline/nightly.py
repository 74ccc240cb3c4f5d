"""Nightly generation: plan shards → score each shard → publish → metrics.

A shard, per user: taste clusters from recent completed plays → ANN top-k per cluster →
one batched ranker call → re-ranking into mixes. Shards are independent and deterministic,
so they can run anywhere and be rerun at will.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import feature_store as fs
from pipeline import registry
from pipeline import schema as s
from pipeline.ann import AnnIndex, load_index
from pipeline.config import Settings
from pipeline.embeddings import Embeddings
from pipeline.features import TRACK_ROW, USER_ROW, pair_features, vocabulary, window_days
from pipeline.indexing import index_dir, index_for_model
from pipeline.ingest import read_raw_events
from pipeline.io import atomic_write_json, atomic_write_parquet, read_json
from pipeline.paths import Layout
from pipeline.rerank import rerank_user
from pipeline.taste import TasteCluster, taste_clusters
from pipeline.world import read_world

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
        self.history_by_user = dict(tuple(self.history.groupby(s.USER_ID)))
        plays = self.catalog[s.TRACK_ID].map(self.tracks.set_index(s.TRACK_ID)["plays"]).astype(float).fillna(0.0)
        self.by_popularity = self.catalog.assign(_plays=plays.to_numpy()).sort_values(
            ["_plays", s.TRACK_ID], ascending=[False, True])


def score_shard(settings: Settings, plan_path: str, shard: int) -> str:
    """Mixes for one shard's users, written to the night's staging area."""
    night = read_json(Path(plan_path))
    users = night["shards"][shard]
    context = _load_context(settings, night, users)
    slots = shard_slots(context, users, night)
    path = Layout(settings.home).nightly(night["date"]) / f"shard-{shard:04d}.parquet"
    write_shard(slots, path)
    log.info("shard %d: %d users, %d mixes, %d slots", shard, len(users),
             slots[[s.USER_ID, s.MIX_INDEX]].drop_duplicates().shape[0], len(slots))
    return str(path)


def shard_slots(ctx: ShardContext, users: list[int], night: dict, clock: StageClock | None = None) -> pd.DataFrame:
    """The published slots of `users`: the per-user work of a shard (the benchmark measures this call)."""
    clock = clock or StageClock()
    rows = [_user_mixes(ctx, user, night, clock) for user in users]
    with clock.stage("reranking"):
        return pd.concat([r for r in rows if not r.empty] or [_empty_slots()], ignore_index=True)


def write_shard(slots: pd.DataFrame, path: Path) -> Path:
    return atomic_write_parquet(slots, path)


def _load_context(settings: Settings, night: dict, users: list[int]) -> ShardContext:
    layout = Layout(settings.home)
    day = night["date"]
    catalog = read_world(layout).catalog
    directory = index_dir(settings, night["index_version"])
    embeddings = Embeddings.load(directory / "embeddings.npz")
    model = registry.load_model(settings, registry.ModelRef(night["model_name"], night["model_version"],
                                                            night["model_run_id"]))
    history = read_raw_events(layout, window_days(day, settings.training.window_days * 2))
    history = history.loc[history[s.USER_ID].isin(users)]
    store = fs.feature_store(settings)
    user_features = fs.online(settings, fs.USER_PROFILE, s.USER_ID, users, fs.USER_FEATURES, store)
    track_features = fs.online(settings, fs.TRACK_STATS, s.TRACK_ID, catalog[s.TRACK_ID], fs.TRACK_FEATURES, store)
    return ShardContext(settings, day, catalog, embeddings, load_index(directory), model, history,
                        user_features, track_features)


def _user_mixes(ctx: ShardContext, user: int, night: dict, clock: StageClock) -> pd.DataFrame:
    with clock.stage("taste_clusters"):
        history = ctx.history_by_user.get(user, ctx.history.iloc[0:0])
        clusters = _clusters(ctx, history, user)
    if not clusters:
        return _empty_slots()
    with clock.stage("retrieval"):
        candidates = _candidates(ctx, clusters, history)
    with clock.stage("feature_gathering"):
        features = _features(ctx, user, candidates)
    with clock.stage("scoring"):
        candidates[s.SCORE] = ctx.model.predict_proba(features)[:, 1]
    with clock.stage("reranking"):
        return _rerank(ctx, user, night, clusters, candidates, history)


def _rerank(ctx: ShardContext, user: int, night: dict, clusters: list[TasteCluster], candidates: pd.DataFrame,
            history: pd.DataFrame) -> pd.DataFrame:
    config = ctx.settings.rerank
    pool = _explore_pool(ctx, user, history)
    rng = np.random.default_rng([ctx.settings.seed, int(pd.Timestamp(ctx.day).strftime("%Y%m%d")), user])
    mixes = rerank_user(candidates, [c.title for c in clusters], pool, config, rng)
    frames = [
        mix.slots.assign(**{s.MIX_TITLE: mix.title, s.MIX_ID: f"{ctx.day}:{user}:{mix.index}"}) for mix in mixes
    ]
    if not frames:
        return _empty_slots()
    return pd.concat(frames, ignore_index=True).assign(
        **{s.USER_ID: user, s.DATE: ctx.day, s.MODEL_VERSION: night["model_version"],
           s.INDEX_VERSION: night["index_version"], s.FEATURE_VERSION: night["feature_version"]}
    )[PUBLISHED_COLUMNS]


def _clusters(ctx: ShardContext, history: pd.DataFrame, user: int) -> list[TasteCluster]:
    recent_days = set(window_days(ctx.day, ctx.settings.retrieval.recent_days))
    recent = history.loc[~history[s.SKIPPED] & history[s.TS].dt.strftime("%Y-%m-%d").isin(recent_days)]
    plays = recent[[s.TRACK_ID]].merge(ctx.catalog[[s.TRACK_ID, s.GENRE, s.MOOD]], on=s.TRACK_ID)
    _, item_factors, _, item_row = ctx.factors
    return taste_clusters(plays, item_factors, item_row, ctx.settings.rerank, ctx.settings.seed)


def _candidates(ctx: ShardContext, clusters: list[TasteCluster], history: pd.DataFrame) -> pd.DataFrame:
    """ANN neighbours of each cluster's query, minus tracks the user keeps skipping."""
    k = ctx.settings.retrieval.candidates_per_cluster
    frames = []
    for cluster_index, cluster in enumerate(clusters):
        track_ids, similarity = ctx.index.query(cluster.query, k)
        frames.append(pd.DataFrame({s.TRACK_ID: track_ids, "cluster": cluster_index, "retrieval_score": similarity}))
    candidates = pd.concat(frames, ignore_index=True)
    disliked = _disliked(history)
    candidates = candidates.loc[~candidates[s.TRACK_ID].isin(disliked)]
    known = set(history[s.TRACK_ID].tolist())
    meta = ctx.catalog[[s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD]]
    return candidates.merge(meta, on=s.TRACK_ID, how="inner").assign(
        **{s.DISCOVERY: lambda f: ~f[s.TRACK_ID].isin(known)}
    )


def _disliked(history: pd.DataFrame) -> set[int]:
    """Tracks skipped at least twice and never played through: not eligible."""
    per_track = history.groupby(s.TRACK_ID)[s.SKIPPED].agg(["sum", "all"])
    return set(per_track.index[(per_track["sum"] >= 2) & per_track["all"]].tolist())


def _features(ctx: ShardContext, user: int, candidates: pd.DataFrame) -> pd.DataFrame:
    """Ranker inputs of all of a user's candidates (one batched ranker call scores them)."""
    pairs = pd.DataFrame({
        s.USER_ID: user,
        s.TRACK_ID: candidates[s.TRACK_ID].to_numpy(),
        "known": ~candidates[s.DISCOVERY].to_numpy(),
        USER_ROW: int(ctx.user_row.get(user, -1)),
        TRACK_ROW: ctx.track_row.reindex(candidates[s.TRACK_ID]).to_numpy(),
    })
    return pair_features(pairs, ctx.users, ctx.tracks, ctx.catalog, ctx.factors, ctx.day)


def _explore_pool(ctx: ShardContext, user: int, history: pd.DataFrame) -> pd.DataFrame:
    """Never-played, most-played tracks of the genres the user listens to least."""
    genres = ctx.genres
    row = ctx.user_row.get(user)
    vector = ctx.users["genre_affinity"].iloc[row] if row is not None else None
    affinity = np.asarray(vector, dtype=float) if vector is not None else np.zeros(len(genres))
    order = np.argsort(affinity, kind="stable")
    under_explored = {genres[i] for i in order[: max(1, len(genres) // 2)]}
    ranked = ctx.by_popularity
    pool = ranked.loc[ranked[s.GENRE].isin(under_explored) & ~ranked[s.TRACK_ID].isin(history[s.TRACK_ID])]
    pool = pool.groupby(s.GENRE, sort=False).head(EXPLORE_POOL_PER_GENRE)
    return pool[[s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD]].assign(**{s.DISCOVERY: True})


PUBLISHED_COLUMNS = [
    s.DATE, s.USER_ID, s.MIX_ID, s.MIX_INDEX, s.MIX_TITLE, s.POSITION, s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD,
    s.DISCOVERY, s.POLICY, s.PROPENSITY, s.SCORE, s.MODEL_VERSION, s.INDEX_VERSION, s.FEATURE_VERSION,
]


def _empty_slots() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=DTYPES[column]) for column in PUBLISHED_COLUMNS})


DTYPES = {
    s.DATE: "object", s.USER_ID: "int64", s.MIX_ID: "object", s.MIX_INDEX: "int64", s.MIX_TITLE: "object",
    s.POSITION: "int64", s.TRACK_ID: "int64", s.ARTIST_ID: "int64", s.GENRE: "object", s.MOOD: "object",
    s.DISCOVERY: "bool", s.POLICY: "object", s.PROPENSITY: "float64", s.SCORE: "float64",
    s.MODEL_VERSION: "object", s.INDEX_VERSION: "object", s.FEATURE_VERSION: "object",
}
