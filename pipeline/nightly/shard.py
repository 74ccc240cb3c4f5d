"""The nightly shards: plan them, then per shard compose the three stages for every user.

Stage 1 (`pipeline.candidates.retrieval`): taste clusters and their candidates, per user. Stage 2
(`pipeline.scoring`): one batched ranker call per block of users. Stage 3 (`pipeline.reranking`): each user's
mixes with their exploration slots. Shards are independent and deterministic, so they can run anywhere and be
rerun at will; the night's publication is `pipeline.publish`'s job.
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
from pipeline.candidates.retrieval import RECENT_PLAY, CandidateSource, CatalogView
from pipeline.candidates.taste import TasteCluster
from pipeline.core import registry
from pipeline.core import schema as s
from pipeline.core.columns import Columns
from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_json, atomic_write_parquet_blocks, read_json
from pipeline.core.paths import Layout
from pipeline.data.catalog import read_catalog
from pipeline.data.events import read_raw_events
from pipeline.features import store as fs
from pipeline.features.definitions import window_days
from pipeline.reranking.explore import ExplorePool
from pipeline.reranking.reranker import Reranker, RuleReranker
from pipeline.reranking.rules import SLOT_COLUMNS
from pipeline.scoring.inputs import RankerInputs
from pipeline.scoring.scorer import Scorer, scorer

log = logging.getLogger(__name__)
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
    """What every user of a shard needs, loaded once per shard, and the three stages built on it."""

    settings: Settings
    day: str
    catalog: pd.DataFrame
    embeddings: Embeddings
    index: AnnIndex
    scorer: Scorer
    history: pd.DataFrame
    users: pd.DataFrame  # online user_profile values, one row per shard user
    tracks: pd.DataFrame  # online track_stats values, one row per catalog track

    def __post_init__(self) -> None:
        settings = self.settings
        view = CatalogView.build(self.catalog, self.embeddings, self.tracks.set_index(s.TRACK_ID)["plays"])
        self.source = CandidateSource(view, self.index, settings.retrieval, settings.rerank,
                                      settings.shard.rank_per_cluster, settings.seed)
        self.inputs = RankerInputs(self.day, self.catalog, self.embeddings, self.users, self.tracks)
        self.explore_pool = ExplorePool(view, settings.rerank)
        self.reranker: Reranker = RuleReranker(settings.rerank)
        # History sorted by user (stable): a user's rows are one slice found by binary search, no per-user frames.
        order = np.argsort(self.history[s.USER_ID].to_numpy(), kind="stable")
        history = self.history.iloc[order]
        self.history_users = history[s.USER_ID].to_numpy()
        recent = window_days(self.day, settings.retrieval.recent_days)
        start, end = pd.Timestamp(recent[0], tz="UTC"), pd.Timestamp(recent[-1], tz="UTC") + pd.Timedelta(days=1)
        skipped = history[s.SKIPPED].to_numpy(dtype=bool)
        in_window = ((history[s.TS] >= start) & (history[s.TS] < end)).to_numpy()
        self.history_columns = {s.TRACK_ID: history[s.TRACK_ID].to_numpy(dtype=np.int64), s.SKIPPED: skipped,
                                RECENT_PLAY: ~skipped & in_window}

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

    Per block: each user's taste clusters, one ANN search for all of them, each user's candidates, then one
    feature build and one ranker call for the whole block (their fixed costs are paid once per block, not once
    per user), then each user's re-ranking.
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
    ranker = scorer(model, len(users), settings.shard.compile_ranker_min_users, layout.compiled_rankers)
    history = read_raw_events(layout, window_days(day, settings.training.window_days * 2))
    history = history.loc[history[s.USER_ID].isin(users)]
    store = fs.feature_store(settings)
    user_features = fs.online(settings, fs.USER_PROFILE, s.USER_ID, users, fs.USER_FEATURES, store)
    track_features = fs.online(settings, fs.TRACK_STATS, s.TRACK_ID, catalog[s.TRACK_ID], fs.TRACK_FEATURES, store)
    return ShardContext(settings, day, catalog, embeddings, load_index(directory), ranker, history,
                        user_features, track_features)


def _block_mixes(ctx: ShardContext, users: list[int], night: dict, clock: StageClock) -> pd.DataFrame:
    """Stage 1 per user around one batched ANN search for the block, stage 2 once for the block, stage 3 per user."""
    with clock.stage("taste_clusters"):
        tastes = _tastes(ctx, users)
    if not tastes:
        return _empty_slots()
    with clock.stage("retrieval"):
        work = _candidates(ctx, tastes)
    with clock.stage("feature_gathering"):
        features, scored_rows = ctx.inputs.block([(user, candidates) for user, _, _, candidates in work])
    with clock.stage("scoring"):
        scores = ctx.scorer.score(features)
    with clock.stage("reranking"):
        mixes = [_rerank(ctx, user, clusters, candidates, history, scores[rows])
                 for (user, history, clusters, candidates), rows in zip(work, scored_rows, strict=True)]
        return _slots_frame(ctx, night, mixes)


def _tastes(ctx: ShardContext, users: list[int]) -> list[tuple[int, Columns, list[TasteCluster]]]:
    """(user, history, taste clusters) of each user with at least one cluster."""
    tastes = []
    for user in users:
        history = ctx.user_history(user)
        clusters = ctx.source.clusters(history)
        if clusters:
            tastes.append((user, history, clusters))
    return tastes


def _candidates(ctx: ShardContext, tastes: list[tuple[int, Columns, list[TasteCluster]]]
                ) -> list[tuple[int, Columns, list[TasteCluster], Columns]]:
    """Each user's candidates, from one ANN search for every cluster of the block."""
    found_ids, found_cosine = ctx.source.neighbours([c for _, _, clusters in tastes for c in clusters])
    work, start = [], 0
    for user, history, clusters in tastes:
        end = start + len(clusters)
        work.append((user, history, clusters,
                     ctx.source.candidates(clusters, history, (found_ids[start:end], found_cosine[start:end]))))
        start = end
    return work


def _rerank(ctx: ShardContext, user: int, clusters: list[TasteCluster], candidates: Columns,
            history: Columns, scores: np.ndarray) -> tuple[int, Columns, list[str]]:
    """One user's mixes: (user, slot columns, title of each mix)."""
    rng = np.random.default_rng([ctx.settings.seed, int(ctx.day.replace("-", "")), user])
    pool = ctx.explore_pool(ctx.inputs.genre_affinity(user), history[s.TRACK_ID])
    slots, of_cluster = ctx.reranker({**candidates, s.SCORE: scores}, [c.genre for c in clusters], pool, rng)
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


def _empty_slots() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=s.PUBLISHED_DTYPES[column]) for column in s.PUBLISHED_COLUMNS})
