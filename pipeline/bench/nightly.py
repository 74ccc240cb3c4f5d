"""`dailymix bench`: what one nightly user costs per core, measured on the real shard code.

A seeded synthetic world is built directly at the requested size (catalog, clustered track
embeddings, per-user histories; user and track feature rows computed by the production
feature functions from those histories) — ALS and Feast are not run at 1M tracks, and the
JSON's `conditions` say so. A ranker of the production shape (`ranker.fit_ranker`, the
training settings' trees and leaves) is trained on synthetic rows built by
`features.pair_features`. Then the measured users go through `nightly.shard_slots` and
`nightly.write_shard` (the functions `score_shard` calls) and `publish.publish`, with a
`StageClock` timing each stage. Everything is single-threaded (threadpoolctl) so runs compare.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.candidates.ann import BACKENDS, AnnIndex, exact_top_k, load_index, normalise
from pipeline.candidates.ann import build_index as ann_build_index
from pipeline.candidates.embeddings import Embeddings
from pipeline.core import schema as s
from pipeline.core.config import BenchConfig, Settings
from pipeline.core.io import atomic_write_json
from pipeline.core.progress import progress
from pipeline.features.definitions import FEATURE_COLUMNS, TRACK_ROW, USER_ROW, pair_features, track_stats, user_profile
from pipeline.scoring.compiled import CompiledRanker
from pipeline.scoring.scorer import Scorer, SklearnScorer, scorer
from pipeline.sim.world import GENRES, MOODS

DAY = "2026-11-20"
N_GENRES, N_MOODS = 16, 6
TRACKS_PER_ARTIST = 20
NIGHT_USERS, NIGHT_MIXES, NIGHT_HOURS = 50_000_000, 6, 4.0
TARGET_TRACKS = 60_000_000
DEPTHS = [300, 500, 1000, 2000]  # neighbours per taste cluster in the retrieval depth trade
PEER_STAGES = ("taste_clusters", "retrieval", "feature_gathering", "scoring")  # what the whole-user peer does
QUERY_KNOBS = ("search_k", "ef", "nprobe")  # query-time knobs: not part of a cached index's key


@dataclass(frozen=True)
class SyntheticWorld:
    catalog: pd.DataFrame  # schema.CATALOG_COLUMNS the shard reads
    events: pd.DataFrame  # user_id, track_id, ts, ms_played, skipped: the shard users' history
    embeddings: Embeddings
    user_features: pd.DataFrame  # features.user_profile rows (what the online store serves)
    track_features: pd.DataFrame  # features.track_stats rows


def synthetic_world(n_tracks: int, n_users: int, dim: int, plays_per_user: float, seed: int) -> SyntheticWorld:
    """Clustered embeddings: a track is its genre's centre + its mood's + its artist's offset + noise, so a
    user's plays form taste clusters the way ALS vectors of real listening do. Users listen to 2-6 genres."""
    rng = np.random.default_rng(seed)
    catalog, cell = _catalog(rng, n_tracks)
    genre_centre = rng.normal(size=(N_GENRES, dim))
    mood_centre = rng.normal(size=(N_MOODS, dim)) * 0.6
    artist_offset = rng.normal(size=(catalog[s.ARTIST_ID].max() + 1, dim)) * 0.5
    genre, mood = cell // N_MOODS, cell % N_MOODS
    items = (genre_centre[genre] + mood_centre[mood] + artist_offset[catalog[s.ARTIST_ID].to_numpy()]
             + rng.normal(size=(n_tracks, dim)) * 0.5).astype(np.float32)
    events = _history(rng, catalog, cell, n_users, plays_per_user)
    user_ids = np.arange(n_users, dtype=np.int64)
    sums = np.zeros((n_users, dim))
    np.add.at(sums, events[s.USER_ID].to_numpy(), items[events[s.TRACK_ID].to_numpy()])
    counts = np.bincount(events[s.USER_ID].to_numpy(), minlength=n_users)[:, None]
    embeddings = Embeddings(user_ids, catalog[s.TRACK_ID].to_numpy(), (sums / np.maximum(counts, 1)).astype(
        np.float32), items)
    return SyntheticWorld(catalog, events, embeddings, user_profile(events, catalog, DAY),
                          track_stats(events, catalog, DAY))


def _catalog(rng: np.random.Generator, n_tracks: int) -> tuple[pd.DataFrame, np.ndarray]:
    n_artists = max(1, n_tracks // TRACKS_PER_ARTIST)
    genre_share = 1.0 / np.arange(1, N_GENRES + 1) ** 0.8
    artist_genre = rng.choice(N_GENRES, size=n_artists, p=genre_share / genre_share.sum())
    artist = rng.integers(0, n_artists, n_tracks)
    genre = artist_genre[artist]
    mood = rng.integers(0, N_MOODS, n_tracks)
    release = (pd.Timestamp(DAY) - pd.to_timedelta(rng.integers(1, 15 * 365, n_tracks), unit="D")).normalize()
    catalog = pd.DataFrame({
        s.TRACK_ID: np.arange(n_tracks, dtype=np.int64),
        s.ARTIST_ID: artist.astype(np.int64),
        s.GENRE: pd.array(np.asarray(GENRES)[genre], dtype="string"),
        s.MOOD: pd.array(np.asarray(MOODS)[mood], dtype="string"),
        s.RELEASE_DATE: release.astype("datetime64[ns]"),
        s.DURATION_MS: np.clip(rng.lognormal(np.log(210_000), 0.35, n_tracks), 60_000, 900_000).astype(np.int64),
        s.POPULARITY: rng.permutation(n_tracks) + 1.0,  # rank: 1 is the biggest hit
    })
    return catalog, genre * N_MOODS + mood


def _history(rng: np.random.Generator, catalog: pd.DataFrame, cell: np.ndarray, n_users: int,
             plays_per_user: float) -> pd.DataFrame:
    """Each user: 2-6 genres with Dirichlet weights, plays skewed to each (genre, mood) cell's hits."""
    order = np.lexsort((catalog[s.POPULARITY].to_numpy(), cell))  # by cell, then most popular first
    sizes = np.bincount(cell, minlength=N_GENRES * N_MOODS)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    plays = np.maximum(5, rng.gamma(2.0, plays_per_user / 2.0, n_users).astype(int))
    user = np.repeat(np.arange(n_users), plays)
    n_tastes = rng.integers(2, 7, n_users)
    tastes = np.argsort(rng.random((n_users, N_GENRES)), axis=1)[:, :6]
    weights = rng.dirichlet(np.ones(6) * 2.0, n_users) * (np.arange(6) < n_tastes[:, None])
    weights /= weights.sum(axis=1, keepdims=True)
    pick = (rng.random(len(user))[:, None] > np.cumsum(weights, axis=1)[user]).sum(axis=1).clip(0, 5)
    genre = tastes[user, pick]
    mood = (user * 7 + genre + rng.integers(0, 2, len(user))) % N_MOODS  # each user prefers ~2 moods per genre
    chosen = genre * N_MOODS + mood
    chosen = np.where(sizes[chosen] > 0, chosen, np.argmax(sizes))
    offset = np.floor(sizes[chosen] * rng.random(len(user)) ** 4).astype(np.int64)
    track = order[starts[chosen] + offset]
    skipped = rng.random(len(user)) < 0.2
    duration = catalog[s.DURATION_MS].to_numpy()[track]
    ts = pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(days=1) - pd.to_timedelta(
        rng.integers(1, 28 * 86_400, len(user)), unit="s")
    return pd.DataFrame({s.USER_ID: user.astype(np.int64), s.TRACK_ID: track.astype(np.int64), s.TS: ts,
                         s.MS_PLAYED: np.where(skipped, duration // 10, duration).astype(np.int64),
                         s.SKIPPED: skipped})


def train_ranker(world: SyntheticWorld, settings: Settings, n_rows: int, seed: int):
    """A ranker of the production shape (ranker.fit_ranker, settings.training) on synthetic rows: half played
    tracks, half random catalog tracks; P(played through) rises with the user's affinity for the genre."""
    from pipeline.scoring.ranker import TrainingSet, fit_ranker

    rng = np.random.default_rng(seed + 1)
    played = world.events.iloc[rng.integers(0, len(world.events), n_rows // 2)]
    random_users = rng.choice(world.user_features[s.USER_ID].to_numpy(), n_rows - len(played))
    pairs = pd.DataFrame({
        s.USER_ID: np.concatenate([played[s.USER_ID].to_numpy(), random_users]),
        s.TRACK_ID: np.concatenate([played[s.TRACK_ID].to_numpy(), rng.integers(0, len(world.catalog),
                                                                                   len(random_users))]),
    })
    pairs["known"] = np.arange(len(pairs)) < len(played)
    pairs[USER_ROW] = pd.Index(world.user_features[s.USER_ID]).get_indexer(pairs[s.USER_ID])
    pairs[TRACK_ROW] = pd.Index(world.track_features[s.TRACK_ID]).get_indexer(pairs[s.TRACK_ID])
    features = pair_features(pairs, world.user_features, world.track_features, world.catalog,
                             world.embeddings.lookup(), DAY)
    affinity = np.nan_to_num(features["genre_affinity"].to_numpy(), nan=0.0)
    label = (rng.random(len(pairs)) < 0.15 + 0.7 * np.minimum(1.0, 3.0 * affinity)).astype(np.int64)
    return fit_ranker(TrainingSet(features, label, np.ones(len(label)), np.full(len(label), DAY)), settings)


def build_index(world: SyntheticWorld, backend: str, config: BenchConfig, directory: Path, seed: int) -> AnnIndex:
    """The backend's index of every track, reused from `directory` when the same world built it before."""
    items, ids = world.embeddings.item_factors, world.embeddings.track_ids
    build_params, query_effort = bench_knobs(config, backend)
    key = directory / "-".join([backend, str(len(ids)), str(seed),
                                *(str(v) for k, v in build_params.items() if k not in QUERY_KNOBS)])
    if (key / "index.json").exists():
        return load_index(key).with_query_effort(query_effort)
    return ann_build_index(backend, items, ids, key, seed, **build_params)


def bench_knobs(config: BenchConfig, backend: str) -> tuple[dict[str, int], int]:
    """The backend's build parameters and query-time effort from the bench config."""
    knobs = {"annoy": ({"n_trees": config.annoy_trees, "search_k": config.annoy_search_k}, config.annoy_search_k),
             "voyager": ({"m": config.voyager_m, "ef_construction": config.voyager_ef_construction,
                          "ef": config.voyager_ef}, config.voyager_ef),
             "faiss": ({"nlist": config.faiss_nlist, "nprobe": config.faiss_nprobe}, config.faiss_nprobe)}
    return knobs[backend]


# ------------------------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------------------------


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB (Linux /proc; peak falls back to getrusage)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def reset_peak_rss() -> bool:
    """Restart the peak-RSS mark at the current RSS (Linux ≥ 4.0), so each pass reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _night(config: BenchConfig) -> dict:
    return {"date": DAY, "model_name": "bench-ranker", "model_version": "bench", "model_run_id": "bench",
            "index_version": f"bench-{config.backend}", "feature_version": "bench"}


def measure_shard(ctx, users: list[int], night: dict, out: Path, desc: str) -> dict[str, Any]:
    """Run the shard code on `users` as score_shard does (blocks streamed to a Parquet file); stage times,
    CPU and wall seconds and the pass's peak RSS."""
    from pipeline.nightly.shard import StageClock, shard_blocks, write_shard

    clock = StageClock()
    peak_reset = reset_peak_rss()
    before, _ = rss_mb()
    cpu, wall = time.process_time(), time.perf_counter()
    n_blocks = -(-len(users) // ctx.settings.shard.block_users)
    blocks = progress(shard_blocks(ctx, users, night, clock), total=n_blocks, desc=desc, lines=5)
    mixes, slots = write_shard(blocks, out, clock)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    _, peak = rss_mb()
    return {"users": len(users), "cpu_s": cpu, "wall_s": wall, "clock": clock, "slots": slots, "mixes": mixes,
            "rss_before_mb": round(before, 1), "peak_rss_mb": round(peak, 1), "peak_reset": peak_reset}


def publish_shards(settings: Settings, shard_paths: list[Path], night: dict) -> dict[str, Any]:
    """The real publish step (rule check, content hash, atomic swap) over the measured shards."""
    from pipeline.core.paths import Layout
    from pipeline.publish.files import publish

    plan_path = Layout(settings.home).nightly(DAY) / "plan.json"
    atomic_write_json({**night, "shards": []}, plan_path)
    cpu, wall = time.process_time(), time.perf_counter()
    manifest = publish(settings, str(plan_path), [str(p) for p in shard_paths], run_id="bench")
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall, "manifest": manifest}


def compare_retrieval(queries: np.ndarray, world: SyntheticWorld, indexes: dict[str, AnnIndex], k: int,
                      block: int) -> dict[str, Any]:
    """Annoy, Voyager, exact batched BLAS and implicit's batched top-N on the same queries: ms/query, recall@k."""
    items = world.embeddings.item_factors
    unit = normalise(items).astype(np.float32)
    start = time.process_time()
    truth = np.vstack([exact_top_k(queries[i:i + block], unit, k) for i in range(0, len(queries), block)])
    results: dict[str, Any] = {"queries": len(queries), "k": k,
                               "exact_blas": {"ms_per_query": 1000 * (time.process_time() - start) / len(queries),
                                              "recall_at_1000": 1.0, "batch": block}}
    for name, index in indexes.items():
        start = time.process_time()
        found, _ = index.query_batch(queries, k)
        elapsed = time.process_time() - start
        results[name] = {"ms_per_query": 1000 * elapsed / len(queries), "params": index.params,
                         "recall_at_1000": _recall(found, world.embeddings.track_ids[truth])}
    results["implicit_topk"] = _implicit_topk(queries, unit, truth, k, block, world.embeddings.track_ids)
    return results


def depth_trade(queries: np.ndarray, items: np.ndarray, track_ids: np.ndarray, index: AnnIndex,
                depths: list[int], rank_depth: int) -> dict[str, Any]:
    """What fetching fewer neighbours per taste cluster costs: for each depth d, the index's CPU ms per query at
    k = d and the share of the exact top `rank_depth` (the cluster's tracks that may reach the ranker) among
    the d it returns. Depths below `rank_depth` cannot reach 1 (at most d / rank_depth)."""
    unit = normalise(items).astype(np.float32)
    truth = track_ids[np.vstack([exact_top_k(queries[i:i + 64], unit, rank_depth) for i in range(0, len(queries), 64)])]
    rows = []
    for depth in depths:
        start = time.process_time()
        found, _ = index.query_batch(queries, depth)
        elapsed = time.process_time() - start
        rows.append({"depth": depth, "ms_per_query": 1000 * elapsed / len(queries),
                     f"recall_of_top_{rank_depth}": _recall(found, truth)})
    return {"rank_depth": rank_depth, "queries": len(queries), "depths": rows}


def whole_user_peer(ctx, users: list[int], model: Any) -> dict[str, Any]:
    """The straightforward path the shard's blocks replaced, on the same code: per user its taste clusters, one
    index call for its own clusters, its feature rows (from the shard's feature tables) and one scikit-learn
    call. CPU ms per user, to set against the shard's same four stages."""
    start, candidates, served = time.process_time(), 0, 0
    for user in users:
        history = ctx.user_history(user)
        clusters = ctx.source.clusters(history)
        if not clusters:
            continue
        features = ctx.inputs.for_user(user, ctx.source.candidates(clusters, history))
        model.predict_proba(features[list(FEATURE_COLUMNS)])
        candidates, served = candidates + len(features), served + 1
    cpu = time.process_time() - start
    return {"users": len(users), "users_with_clusters": served, "ms_per_user": 1000 * cpu / max(1, len(users)),
            "candidates_per_user": candidates / max(1, served)}


def _recall(found_ids: np.ndarray, true_ids: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found_ids, true_ids, strict=True))
    return hits / true_ids.size


def _implicit_topk(queries: np.ndarray, unit_items: np.ndarray, truth: np.ndarray, k: int, block: int,
                   track_ids: np.ndarray) -> dict[str, Any]:
    """implicit's own batched top-N (the library peer): an ALS model holding the unit item vectors answers
    `recommend` for the queries as users, no filtering, one thread."""
    from implicit.cpu.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix

    model = AlternatingLeastSquares(factors=unit_items.shape[1], num_threads=1)
    model.item_factors = unit_items
    model.user_factors = normalise(queries).astype(np.float32)
    empty = csr_matrix((len(queries), len(unit_items)), dtype=np.float32)
    start = time.process_time()
    rows = np.vstack([model.recommend(np.arange(i, min(i + block, len(queries))), empty[i:i + block], N=k,
                                      filter_already_liked_items=False)[0] for i in range(0, len(queries), block)])
    elapsed = time.process_time() - start
    return {"ms_per_query": 1000 * elapsed / len(queries), "recall_at_1000": _recall(track_ids[rows],
                                                                                       track_ids[truth]),
            "batch": block}


def scoring_curve(model, features: pd.DataFrame, one_at_a_time: int, sizes: list[int]) -> dict[str, Any]:
    """Latency of `one_at_a_time` candidates scored one per call vs one batched call, and a batch-size curve."""
    rows = features.iloc[:one_at_a_time]
    start = time.perf_counter()
    for i in range(len(rows)):
        model.predict_proba(rows.iloc[i:i + 1])
    single = time.perf_counter() - start
    start = time.perf_counter()
    model.predict_proba(rows)
    batched = time.perf_counter() - start
    curve = []
    for size in sizes:
        batch = features.iloc[np.arange(size) % len(features)]
        repeats = max(1, min(5, 6000 // size))
        start = time.perf_counter()
        for _ in range(repeats):
            model.predict_proba(batch)
        latency = (time.perf_counter() - start) / repeats
        curve.append({"batch": size, "latency_ms": 1000 * latency, "candidates_per_s": size / latency})
    return {"candidates": len(rows), "one_at_a_time_ms": 1000 * single, "batched_ms": 1000 * batched,
            "speedup": single / batched, "batch_curve": curve}


def compiled_comparison(model, compiled, features: pd.DataFrame, compile_s: float) -> dict[str, Any]:
    """The same candidates scored by scikit-learn and by the compiled ranker: µs per candidate, largest difference."""
    batch = features.iloc[np.arange(6000) % len(features)]
    timings = {}
    for name, scoring in (("sklearn", model), ("compiled", compiled)):
        start = time.process_time()
        scores = scoring.predict_proba(batch)[:, 1]
        timings[name] = (1e6 * (time.process_time() - start) / len(batch), scores)
    return {"compile_s": compile_s, "sklearn_us_per_candidate": timings["sklearn"][0],
            "compiled_us_per_candidate": timings["compiled"][0],
            "speedup": timings["sklearn"][0] / timings["compiled"][0],
            "max_abs_difference": float(np.abs(timings["sklearn"][1] - timings["compiled"][1]).max())}


def cache_root(config: BenchConfig, home: Path) -> Path:
    return Path(config.cache) if config.cache else home / "bench-cache"


def projection(points: list[tuple[int, float]]) -> dict[str, Any]:
    """Cores for 50M users × 6 mixes in 4 h at the largest measured catalog and at 60M tracks.

    `points`: (catalog tracks, CPU ms per user) at two or more catalog sizes. Cost per user is fitted as
    a · tracks^exponent by least squares on the logarithms (two points: the line through them).
    """
    def cores(ms: float) -> float:
        return NIGHT_USERS * ms / 1000 / (NIGHT_HOURS * 3600)

    points = sorted(points)
    exponent, scale = fit_growth(points)
    tracks, ms_per_user = points[-1]
    at_target = ms_per_user * (TARGET_TRACKS / tracks) ** exponent
    return {"cores_50M_users_4h": math.ceil(cores(ms_per_user)),
            "cores_50M_users_4h_at_60M_tracks": math.ceil(cores(at_target)),
            "ms_per_user": ms_per_user, "ms_per_user_at_60M_tracks": at_target,
            "growth_exponent": exponent, "fitted_ms_at_largest": scale * tracks**exponent,
            "measured_tracks": [n for n, _ in points], "measured_ms_per_user": [ms for _, ms in points],
            "basis": f"{NIGHT_USERS:,} users x {NIGHT_MIXES} mixes in {NIGHT_HOURS:g} h; cost per user ~ "
                     "tracks^exponent, least squares over the measured catalog sizes, scaled from the largest"}


def fit_growth(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(exponent, a) of ms = a · tracks^exponent, least squares on log-log; needs two distinct sizes."""
    tracks = np.log([n for n, _ in points])
    cost = np.log([ms for _, ms in points])
    if len(np.unique(tracks)) < 2:
        raise ValueError(f"a growth fit needs at least two catalog sizes, got {sorted({n for n, _ in points})}")
    exponent, log_scale = np.polyfit(tracks, cost, 1)
    return float(exponent), float(math.exp(log_scale))


def projection_from_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One projection over every catalog size several bench reports measured (each has two: its growth pass
    and its full pass); a size measured twice keeps the run with more users at it, i.e. the full pass.
    The reports must share one ANN backend: the growth is mostly retrieval's."""
    backends = sorted({report["config"]["backend"] for report in reports})
    if len(backends) > 1:
        raise ValueError(f"reports of several ANN backends ({', '.join(backends)}) do not make one growth curve")
    by_size: dict[int, tuple[int, float]] = {}
    for report in reports:
        measured = report["projection"]
        users = (report["config"]["growth_users"], report["config"]["users"])
        for n, ms, u in zip(measured["measured_tracks"], measured["measured_ms_per_user"], users, strict=True):
            if n not in by_size or u > by_size[n][0]:
                by_size[n] = (u, ms)
    return projection([(n, ms) for n, (_, ms) in by_size.items()])


# ------------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------------


def _context(world: SyntheticWorld, settings: Settings, index: AnnIndex, model, users: np.ndarray):
    from pipeline.nightly.shard import ShardContext

    history = world.events.loc[world.events[s.USER_ID].isin(users)]
    profiles = world.user_features.loc[world.user_features[s.USER_ID].isin(users)].reset_index(drop=True)
    return ShardContext(settings, DAY, world.catalog, world.embeddings, index, as_scorer(model), history, profiles,
                        world.track_features)


def as_scorer(model: Any) -> Scorer:
    """The ranker as a `Scorer`: compiled rankers already are one, a scikit-learn model is wrapped (it has a
    `score` method of its own, accuracy against labels, so the protocol check alone would pass it through)."""
    return model if isinstance(model, (CompiledRanker, SklearnScorer)) else SklearnScorer(model)


def _stage_report(runs: list[dict]) -> dict[str, Any]:
    users = sum(r["users"] for r in runs)
    cpu = {k: sum(r["clock"].cpu[k] for r in runs) for k in runs[0]["clock"].cpu}
    wall = {k: sum(r["clock"].wall[k] for r in runs) for k in runs[0]["clock"].wall}
    total_cpu = sum(r["cpu_s"] for r in runs)
    return {
        "stage_ms_per_user": {k: 1000 * v / users for k, v in cpu.items()},
        "stage_wall_ms_per_user": {k: 1000 * v / users for k, v in wall.items()},
        "total_ms_per_user": 1000 * total_cpu / users,
        "users_per_s_per_core": users / total_cpu,
        "wall_users_per_s": users / sum(r["wall_s"] for r in runs),
    }


def run_bench(config: BenchConfig, home: Path, log=print) -> dict[str, Any]:
    """Build the world, measure the shard path at two U values, compare retrieval and scoring, project."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _run(config, home, log)


def _run(config: BenchConfig, home: Path, log) -> dict[str, Any]:
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    settings = Settings(home=home, seed=config.seed)
    small_u = max(1, config.users // 4)
    log(f"bench: world of {config.tracks:,} tracks x {config.dim} dims, {config.users + small_u:,} users")
    world = synthetic_world(config.tracks, config.users + small_u, config.dim, config.plays_per_user, config.seed)
    log(f"bench: {len(world.events):,} history events; training the ranker on {config.train_rows:,} rows")
    model = train_ranker(world, settings, config.train_rows, config.seed)
    compile_started = time.perf_counter()
    # A production shard (thousands of users) compiles; the measured U may be smaller than the threshold.
    ranker = (scorer(model, users=config.users, min_users=0, cache=cache_root(config, home) / "rankers")
              if config.compile_ranker else model)
    compiled = isinstance(ranker, CompiledRanker)
    compile_s = time.perf_counter() - compile_started
    log(f"bench: scoring with {'the compiled ranker' if compiled else 'scikit-learn'}")
    cache = cache_root(config, home)
    log(f"bench: {config.backend} index (cache {cache})")
    build = time.perf_counter()
    index = build_index(world, config.backend, config, cache, config.seed)
    index_build_s = time.perf_counter() - build
    night = _night(config)
    users = world.user_features[s.USER_ID].to_numpy()
    passes = {}
    for name, chosen in (("small", users[:small_u]), ("full", users[small_u:small_u + config.users])):
        ctx = _context(world, settings, index, ranker, chosen)
        path = home / "nightly" / f"shard-{name}.parquet"
        passes[name] = measure_shard(ctx, chosen.tolist(), night, path, f"shard ({name} U)")
        passes[name]["path"] = path
        del ctx
    published = publish_shards(settings, [passes["full"]["path"]], night)
    report = _stage_report([passes["full"]])
    publish_ms = 1000 * published["cpu_s"] / passes["full"]["users"]
    report["stage_ms_per_user"]["publishing"] += publish_ms
    report["total_ms_per_user"] += publish_ms
    report["users_per_s_per_core"] = 1000 / report["total_ms_per_user"]
    report["stage_ms_sum"] = sum(report["stage_ms_per_user"].values())

    log("bench: retrieval side by side")
    queries = _cluster_queries(world, settings, index, model, users[small_u:small_u + config.compare_users])
    indexes = {config.backend: index}
    for other in BACKENDS:
        if other not in indexes and config.compare_backends:
            build = time.perf_counter()
            indexes[other] = build_index(world, other, config, cache, config.seed)
            log(f"bench: {other} index ready in {time.perf_counter() - build:.0f} s")
    retrieval = compare_retrieval(queries, world, indexes, config.candidates, block=64)
    retrieval["depth_trade"] = depth_trade(queries, world.embeddings.item_factors, world.embeddings.track_ids, index,
                                           DEPTHS, settings.shard.rank_per_cluster)
    log("bench: the whole-user peer")
    peer_users = users[small_u:small_u + config.compare_users]
    peer = whole_user_peer(_context(world, settings, index, model, peer_users), peer_users.tolist(), model)
    batched = sum(report["stage_ms_per_user"][stage] for stage in PEER_STAGES)
    peer |= {"batched_stages": list(PEER_STAGES), "batched_ms_per_user": batched,
             "speedup": peer["ms_per_user"] / batched}

    log("bench: scoring curve")
    sample = _sample_features(world, index, model, settings, users[small_u:small_u + 5])
    scoring = scoring_curve(model, sample, config.single_scores, [1, 10, 100, 500, 1000, 6000])
    if compiled:
        scoring["compiled"] = compiled_comparison(model, ranker, sample, compile_s)

    log(f"bench: catalog growth, {config.tracks // 10:,} tracks")
    small = synthetic_world(config.tracks // 10, config.growth_users, config.dim, config.plays_per_user, config.seed)
    small_index = build_index(small, config.backend, config, cache, config.seed)
    growth_users = small.user_features[s.USER_ID].to_numpy()
    growth = measure_shard(_context(small, settings, small_index, ranker, growth_users), growth_users.tolist(),
                           night, home / "nightly" / "shard-growth.parquet", "shard (growth)")
    growth_ms = 1000 * growth["cpu_s"] / growth["users"]
    shard_ms = 1000 * passes["full"]["cpu_s"] / passes["full"]["users"]

    return {
        **report,
        "recall_at_1000": retrieval[config.backend]["recall_at_1000"],
        "backend": config.backend,
        "index_params": index.params,
        "index_build_s": index_build_s,
        "scoring_backend": "tl2cgen (compiled)" if compiled else "scikit-learn",
        "peak_rss_mb": max(p["peak_rss_mb"] for p in passes.values()),
        "rss": {name: {k: p[k] for k in ("users", "rss_before_mb", "peak_rss_mb", "peak_reset")}
                for name, p in passes.items()},
        "rss_flat_in_users": passes["full"]["peak_rss_mb"] - passes["small"]["peak_rss_mb"]
        <= 0.1 * passes["small"]["peak_rss_mb"],
        "retrieval": retrieval,
        "scoring": scoring,
        "whole_user_peer": peer,
        "projection": projection([(config.tracks // 10, growth_ms), (config.tracks, shard_ms)]),
        "publish": {"cpu_s": published["cpu_s"], "slots": published["manifest"]["slots"],
                    "mixes": published["manifest"]["mixes"], "content_hash": published["manifest"]["content_hash"]},
        "mixes_per_user": published["manifest"]["mixes"] / passes["full"]["users"],
        "config": config.model_dump(),
        "conditions": {**_conditions(config, time.perf_counter() - started),
                       "load_average": [load_before, os.getloadavg()[0]]},
    }


def _cluster_queries(world, settings, index, model, users: np.ndarray) -> np.ndarray:
    """The taste-cluster query vectors of `users`, exactly as the shard builds them."""
    ctx = _context(world, settings, index, model, users)
    queries = [c.query for u in users.tolist() for c in ctx.source.clusters(ctx.user_history(u))]
    return np.asarray(queries, dtype=np.float32)


def _sample_features(world, index, model, settings, users: np.ndarray) -> pd.DataFrame:
    """Ranker inputs of real shard candidates (the first users' ~6,000 each), for the scoring curve."""
    ctx = _context(world, settings, index, model, users)
    frames = []
    for user in users.tolist():
        history = ctx.user_history(user)
        frames.append(ctx.inputs.for_user(user, ctx.source.candidates(ctx.source.clusters(history), history)))
    return pd.concat(frames, ignore_index=True)[list(FEATURE_COLUMNS)]


def _conditions(config: BenchConfig, wall_s: float) -> dict[str, Any]:
    import platform

    return {
        "world": "synthetic, built directly at this size: clustered track embeddings (genre + mood + artist + noise), "
                 "per-user histories, user/track feature rows from features.user_profile/track_stats; "
                 "ALS, Feast and MLflow are not run (their outputs are synthesised)",
        "ranker": "ranker.fit_ranker with the production training settings on synthetic pair_features rows",
        "code_path": "nightly.shard_slots + nightly.write_shard (what score_shard runs) and publish.publish",
        "threads": "threadpoolctl limits=1; ANN and implicit single-threaded",
        "timing": "ms per user per core = process CPU time / users (robust to other jobs on the machine); "
                  "wall times are reported alongside; load_average: the 1-minute load at the start and the end",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, Python "
                   f"{sys.version.split()[0]}",
        "bench_wall_s": wall_s,
    }


def write_report(result: dict[str, Any], path: Path) -> None:
    atomic_write_json(result, path)


def summary(result: dict[str, Any]) -> str:
    stages = ", ".join(f"{k} {v:.1f}" for k, v in result["stage_ms_per_user"].items())
    r = result["retrieval"]
    backends = ", ".join(f"{k} {v['ms_per_query']:.2f} ms/q recall {v['recall_at_1000']:.3f}"
                         for k, v in r.items() if isinstance(v, dict) and "ms_per_query" in v)
    p = result["projection"]
    return (f"{result['users_per_s_per_core']:.1f} users/s/core ({result['total_ms_per_user']:.1f} ms/user; "
            f"{stages})\nrecall@1000 ({result['backend']}) {result['recall_at_1000']:.3f}; retrieval: {backends}\n"
            f"peak RSS {result['peak_rss_mb']:.0f} MB ({result['rss']}); scoring 500 one at a time "
            f"{result['scoring']['one_at_a_time_ms']:.0f} ms vs batched {result['scoring']['batched_ms']:.1f} ms; "
            f"scoring backend {result['scoring_backend']}{_compiled_note(result['scoring'])}\n"
            f"projection: {p['cores_50M_users_4h']} cores at {result['config']['tracks']:,} tracks, "
            f"{p['cores_50M_users_4h_at_60M_tracks']} at 60M (exponent {p['growth_exponent']:.2f})"
            f"{_levers_note(result)}")


def _levers_note(result: dict[str, Any]) -> str:
    """The depth trade and the whole-user peer, for reports that measured them."""
    trade, peer = result["retrieval"].get("depth_trade"), result.get("whole_user_peer")
    if not trade or not peer:
        return ""
    key = f"recall_of_top_{trade['rank_depth']}"
    depths = ", ".join(f"{row['depth']} {row['ms_per_query']:.2f} ms/q {row[key]:.3f}" for row in trade["depths"])
    return (f"\ndepth trade (recall of the exact top {trade['rank_depth']}): {depths}\n"
            f"whole-user peer {peer['ms_per_user']:.1f} ms/user vs the shard's same stages "
            f"{peer['batched_ms_per_user']:.1f} ({peer['speedup']:.1f}x)")


def format_projection(result: dict[str, Any]) -> str:
    """The pooled projection in three lines: the measured points, the fit, the cores."""
    points = ", ".join(f"{n:,} tracks {ms:.1f} ms" for n, ms in zip(result["measured_tracks"],
                                                                    result["measured_ms_per_user"], strict=True))
    return (f"measured CPU ms per user: {points}\n"
            f"fitted growth exponent {result['growth_exponent']:.3f}; "
            f"{result['ms_per_user_at_60M_tracks']:.1f} ms per user at 60M tracks\n"
            f"cores for 50M users x 6 mixes in 4 h: {result['cores_50M_users_4h']} at "
            f"{result['measured_tracks'][-1]:,} tracks, {result['cores_50M_users_4h_at_60M_tracks']} at 60M")

def _compiled_note(scoring: dict[str, Any]) -> str:
    c = scoring.get("compiled")
    return (f" ({c['compiled_us_per_candidate']:.2f} vs {c['sklearn_us_per_candidate']:.2f} µs/candidate, "
            f"{c['speedup']:.1f}x, compiled in {c['compile_s']:.0f} s)") if c else ""


def default_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="dailymix-bench-"))


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=str)
