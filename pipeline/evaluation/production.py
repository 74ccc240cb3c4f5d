"""The platform's own three stages on an offline split: what the mixes people get are worth on real listening.

As far as the data allows, each stage is the production code: stage 1 the production `CandidateSource` (taste
clusters, ANN neighbours per cluster, genre candidates) over a `CatalogView` of the training matrix's ALS vectors
in the configured ANN index, merged with the best neighbours of other candidate sources; stage 2 the production
ranker (`scoring.ranker.fit_ranker`) on `features.pair_features` through `RankerInputs`, plus each source's score
and within-user rank; stage 3 the production `RuleReranker` with its `ExplorePool`.

An offline split is not a listening log, so: items stand for tracks and are their own artists, the item's genre
is its split genre, every training row is one completed play on one fixed day (no skips, no timestamps, no
durations, no moods), and a user's whole training history is the taste window. Features the data cannot give
(skip rates, completion, track age, duration, mood) are constant or missing in both training and scoring, never
invented. The ranker learns "is this a held-out favourite" on a validation split of the training rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from pipeline.candidates.ann import AnnIndex, build_for_recall
from pipeline.candidates.embeddings import Embeddings
from pipeline.candidates.index import tuning
from pipeline.candidates.retrieval import RECENT_PLAY, CandidateSource, CatalogView
from pipeline.core import schema as s
from pipeline.core.columns import Columns, take
from pipeline.core.config import Settings
from pipeline.features.definitions import track_stats as track_stats_of
from pipeline.features.definitions import user_profile
from pipeline.reranking.explore import ExplorePool
from pipeline.reranking.reranker import RuleReranker
from pipeline.scoring.inputs import RankerInputs
from pipeline.scoring.ranker import TrainingSet, fit_ranker
from pipeline.scoring.scorer import Scorer, SklearnScorer

DAY = "2011-06-30"  # the one day every offline play is stamped with (the data has no timestamps)
UNKNOWN = "unknown"
BLOCK_USERS = 256  # users whose features are built in one pair_features call, as a nightly block
RANK_CAP = 200  # source ranks beyond this are one value: the histogram resolves the top (with_source_features)
STAGE_ONE = "stage_one"  # candidate column: found by the production candidate source (else by another source)


def offline_catalog(genre_names: np.ndarray, genres: np.ndarray, listeners: np.ndarray) -> pd.DataFrame:
    """A catalog whose track id, artist id and row are the item's column; genre from the split; no moods,
    dates or durations."""
    n = len(genres)
    ids = np.arange(n, dtype=np.int64)
    catalog = pd.DataFrame({
        s.TRACK_ID: ids, s.TITLE: [f"item {i}" for i in ids], s.ARTIST_ID: ids,
        s.ARTIST_NAME: [f"item {i}" for i in ids], s.GENRE: np.asarray(genre_names)[genres].astype(str),
        s.MOOD: np.full(n, UNKNOWN), s.RELEASE_DATE: pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]"),
        s.DURATION_MS: np.zeros(n, dtype=np.int64), s.POPULARITY: listeners / max(listeners.sum(), 1)})
    text = [s.TITLE, s.ARTIST_NAME, s.GENRE, s.MOOD]
    catalog[text] = catalog[text].astype("string")
    return catalog[list(s.CATALOG_COLUMNS)]


def completed_plays(train: csr_matrix) -> pd.DataFrame:
    """One completed play per training (user, item), all on DAY: the event log the feature definitions read."""
    users, items = train.nonzero()
    return pd.DataFrame({
        s.USER_ID: users.astype("int64"), s.TRACK_ID: items.astype("int64"),
        s.TS: pd.Timestamp(DAY, tz="UTC"), s.SKIPPED: False, s.MS_PLAYED: np.zeros(len(users), dtype=np.int64)})


def embeddings_of(user_vectors: np.ndarray, item_vectors: np.ndarray, train: csr_matrix) -> Embeddings:
    """ALS vectors as the platform stores them: every user, the items someone listened to in training."""
    items = np.flatnonzero(np.diff(train.tocsc().indptr) > 0)
    return Embeddings(np.arange(train.shape[0], dtype=np.int64), items.astype(np.int64),
                      np.ascontiguousarray(user_vectors), np.ascontiguousarray(item_vectors[items]))


@dataclass
class Stages:
    """The production stages built on one training matrix (and the other sources' scores on the same matrix)."""

    train: csr_matrix
    source: CandidateSource
    inputs: RankerInputs
    explore_pool: ExplorePool
    reranker: RuleReranker
    sources: dict[str, np.ndarray]  # name → users × items scores of a candidate source fitted on `train`
    extra_per_source: int

    def history(self, user: int) -> Columns:
        items = self.train.indices[self.train.indptr[user]: self.train.indptr[user + 1]].astype(np.int64)
        return {s.TRACK_ID: items, s.SKIPPED: np.zeros(len(items), dtype=bool),
                RECENT_PLAY: np.ones(len(items), dtype=bool)}

    def candidates(self, user: int) -> tuple[list, Columns]:
        """The user's taste clusters and stage-1 candidates: the production source's, then each other source's
        best `extra_per_source` unheard items it missed (assigned to the nearest cluster)."""
        history = self.history(user)
        clusters = self.source.clusters(history)
        if not clusters:
            return [], {}
        found = self.source.candidates(clusters, history)
        found[STAGE_ONE] = np.ones(len(found[s.TRACK_ID]), dtype=bool)
        return clusters, merge(found, self._extra(user, clusters, history[s.TRACK_ID], found[s.TRACK_ID]))

    def _extra(self, user: int, clusters: list, heard: np.ndarray, found: np.ndarray) -> Columns:
        ids = [best_unheard(scores[user], np.r_[heard, found], self.extra_per_source) for scores in
               self.sources.values()]
        ids = np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)
        view = self.source.view
        rows = view.embedding_row[ids]
        queries = np.vstack([c.query for c in clusters])
        vectors = np.where(rows[:, None] >= 0, view.item_factors[np.maximum(rows, 0)], 0.0)
        cosine = vectors @ queries.T / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        meta = take(view.meta, ids)  # catalog row = item id
        return {s.TRACK_ID: ids, "cluster": np.argmax(cosine, axis=1), "retrieval_score": cosine.max(axis=1),
                s.ARTIST_ID: meta[s.ARTIST_ID], s.GENRE: meta[s.GENRE], s.MOOD: meta[s.MOOD],
                s.DISCOVERY: np.ones(len(ids), dtype=bool), STAGE_ONE: np.zeros(len(ids), dtype=bool)}


def best_unheard(scores: np.ndarray, exclude: np.ndarray, n: int) -> np.ndarray:
    """The n best-scored items not in `exclude`, best first."""
    scores = np.array(scores, dtype=np.float64)
    scores[exclude] = -np.inf
    n = min(n, int(np.isfinite(scores).sum()))
    top = np.argpartition(-scores, n - 1)[:n] if n else np.zeros(0, dtype=np.int64)
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


def merge(first: Columns, second: Columns) -> Columns:
    if not len(second.get(s.TRACK_ID, ())):
        return first
    return {name: np.concatenate([first[name], np.asarray(second[name], dtype=first[name].dtype)])
            for name in first}


def build_stages(train: csr_matrix, genre_names: np.ndarray, genres: np.ndarray, vectors: tuple[np.ndarray, np.ndarray],
                 sources: dict[str, np.ndarray], settings: Settings, directory: Path,
                 extra_per_source: int) -> Stages:
    """Stage 1 to 3 of the platform on `train`: catalog view, tuned ANN index (as the index DAG tunes it), the
    candidate source, ranker inputs from the feature definitions, exploration pool and re-ranker."""
    listeners = np.asarray(train.sum(axis=0)).ravel()
    catalog = offline_catalog(genre_names, genres, listeners)
    embeddings = embeddings_of(*vectors, train)
    view = CatalogView.build(catalog, embeddings, pd.Series(listeners, index=catalog[s.TRACK_ID].to_numpy()))
    index = _index(embeddings, settings, directory)
    source = CandidateSource(view, index, settings.retrieval, settings.rerank, settings.shard.rank_per_cluster,
                             settings.seed)
    events = completed_plays(train)
    inputs = RankerInputs(DAY, catalog, embeddings, user_profile(events, catalog, DAY),
                          track_stats_of(events, catalog, DAY))
    return Stages(train, source, inputs, ExplorePool(view, settings.rerank), RuleReranker(settings.rerank), sources,
                  extra_per_source)


def _index(embeddings: Embeddings, settings: Settings, directory: Path) -> AnnIndex:
    """The item vectors in the configured backend, tuned like the index DAG's build (recall at its fetch depth
    on a seeded sample of normalised user vectors)."""
    rng = np.random.default_rng(settings.seed)
    sample = rng.choice(len(embeddings.user_ids), size=min(settings.retrieval.recall_sample,
                                                           len(embeddings.user_ids)), replace=False)
    queries = embeddings.user_factors[sample]
    queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    config = tuning(settings.retrieval)
    config = replace(config, k=min(config.k, len(embeddings.track_ids)))
    return build_for_recall(settings.retrieval.backend, embeddings.item_factors, embeddings.track_ids, directory,
                            settings.seed, queries, config).index


# --- stage 2: features and the ranker -----------------------------------------------------------------------------


@dataclass
class Block:
    """Stage 1 and the ranker inputs of a block of users: per user (clusters, candidates, feature row of each
    candidate), and one feature frame for every (user, distinct candidate)."""

    users: list[int]
    clusters: list[list]
    candidates: list[Columns]
    rows: list[np.ndarray]
    features: pd.DataFrame


def blocks(stages: Stages, users: np.ndarray) -> Iterator[Block]:
    for start in range(0, len(users), BLOCK_USERS):
        work = [(int(u), *stages.candidates(int(u))) for u in users[start:start + BLOCK_USERS]]
        work = [w for w in work if w[1]]
        if not work:
            continue
        features, rows = stages.inputs.block([(user, candidates) for user, _, candidates in work])
        pairs_user = features_users(work, rows)
        pairs_item = features_items(work, rows)
        features = with_source_features(features, stages.sources, pairs_user, pairs_item)
        yield Block([w[0] for w in work], [w[1] for w in work], [w[2] for w in work], rows, features)


def features_users(work: list, rows: list[np.ndarray]) -> np.ndarray:
    """The user of each feature row of a block."""
    size = max((int(r.max()) + 1 for r in rows if len(r)), default=0)
    users = np.zeros(size, dtype=np.int64)
    for (user, _, _), r in zip(work, rows, strict=True):
        users[r] = user
    return users


def features_items(work: list, rows: list[np.ndarray]) -> np.ndarray:
    size = max((int(r.max()) + 1 for r in rows if len(r)), default=0)
    items = np.zeros(size, dtype=np.int64)
    for (_, _, candidates), r in zip(work, rows, strict=True):
        items[r] = candidates[s.TRACK_ID]
    return items


def with_source_features(features: pd.DataFrame, sources: dict[str, np.ndarray], users: np.ndarray,
                         items: np.ndarray) -> pd.DataFrame:
    """`pair_features` plus, per candidate source, its score and the candidate's rank by that score among the
    user's candidates of the same kind (never played, or familiar), capped at RANK_CAP.

    Familiar candidates are ranked apart: counted in, they would shift every new candidate's rank by the number
    of familiar ones, which differs between the validation split the ranker learns on and the split it scores.
    The cap keeps the top of each list apart in the ranker's histogram: the boosting bins a feature into at
    most 255 quantiles of its training values, so uncapped ranks (up to ~1,700) share a bin six ranks wide and
    the ranker ties a user's best few candidates (docs/evaluation.md)."""
    known = features["known"].to_numpy() > 0
    extra = {}
    for name, scores in sources.items():
        score = np.asarray(scores[users, items], dtype=np.float64)
        extra[f"source_{name}_score"] = score
        rank = pd.Series(-score).groupby([users, known]).rank(method="first").to_numpy()
        extra[f"source_{name}_rank"] = np.minimum(rank, RANK_CAP)
    return pd.concat([features.reset_index(drop=True), pd.DataFrame(extra)], axis=1)


NEGATIVE_SHARE = 0.25  # share of the negative training rows kept (weighted back up), so the fit stays short


def training_set(stages: Stages, held_out: csr_matrix, seed: int) -> TrainingSet:
    """The ranker's rows: every never-played candidate of every user on the validation split, label 1 when the
    user's validation hold-out has it. A seeded NEGATIVE_SHARE of the negatives is kept, weighted 1/share."""
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    frames, labels = [], []
    for block in blocks(stages, users):
        unheard = block.features["known"].to_numpy() == 0
        pair_users = features_users(_work(block), block.rows)[unheard]
        pair_items = features_items(_work(block), block.rows)[unheard]
        frames.append(block.features.loc[unheard])
        labels.append(np.asarray(held_out[pair_users, pair_items]).ravel() > 0)
    features, label = pd.concat(frames, ignore_index=True), np.concatenate(labels)
    keep = label | (np.random.default_rng(seed).random(len(label)) < NEGATIVE_SHARE)
    weight = np.where(label, 1.0, 1.0 / NEGATIVE_SHARE)[keep]
    return TrainingSet(features.loc[keep].reset_index(drop=True), label[keep].astype("int64"), weight,
                       np.full(int(keep.sum()), DAY))


def _work(block: Block) -> list:
    return list(zip(block.users, block.clusters, block.candidates, strict=True))


@dataclass
class Ranked:
    """Per user (row = user index): the ranker's order of never-played candidates, and the published mixes
    flattened (mix 0's slots in position order, then mix 1's, ...); -1 pads. `slots`: every published slot."""

    ranked: np.ndarray
    retrieval: np.ndarray  # the production source's own candidates by retrieval score (no ranker, no other source)
    mixes: np.ndarray
    slots: pd.DataFrame


def rank_and_mix(stages: Stages, scorer: Scorer, users: np.ndarray, n_users: int, depth: int, seed: int) -> Ranked:
    """Stage 2 (score every candidate in one call per block) and stage 3 (the re-ranker per user)."""
    from threadpoolctl import threadpool_limits

    ranked, retrieval, mixes = (np.full((n_users, depth), -1, dtype=np.int64) for _ in range(3))
    slot_frames = []
    for block in blocks(stages, users):
        with threadpool_limits(1, "openmp"):
            scores = scorer.score(block.features[list(scorer_columns(scorer, block.features))])
        for user, clusters, candidates, rows in zip(block.users, block.clusters, block.candidates, block.rows,
                                                    strict=True):
            score = scores[rows]
            ranked[user] = _pad(_unheard_by_score(candidates, score), depth)
            own = take(candidates, candidates[STAGE_ONE])
            retrieval[user] = _pad(_unheard_by_score(own, own["retrieval_score"]), depth)
            slots = _mixes(stages, user, clusters, candidates, score, seed)
            mixes[user] = _pad(slots[s.TRACK_ID], depth)
            slot_frames.append(pd.DataFrame(slots).assign(**{s.USER_ID: user}))
    slots = pd.concat(slot_frames, ignore_index=True) if slot_frames else pd.DataFrame()
    return Ranked(ranked, retrieval, mixes, slots)


def scorer_columns(scorer: Scorer, features: pd.DataFrame) -> list[str]:
    """The columns the scorer's model was fitted on (all of them when it does not say)."""
    model = getattr(scorer, "model", None)
    return list(getattr(model, "feature_names_in_", features.columns))


def _unheard_by_score(candidates: Columns, score: np.ndarray) -> np.ndarray:
    unheard = np.flatnonzero(candidates[s.DISCOVERY])
    order = unheard[np.lexsort((candidates[s.TRACK_ID][unheard], -score[unheard]))]
    _, first = np.unique(candidates[s.TRACK_ID][order], return_index=True)
    return candidates[s.TRACK_ID][order[np.sort(first)]]


def _mixes(stages: Stages, user: int, clusters: list, candidates: Columns, score: np.ndarray, seed: int) -> Columns:
    """The user's mixes as the nightly makes them (the rng seeded per user, as per user and night there)."""
    history = stages.history(user)
    pool = stages.explore_pool(stages.inputs.genre_affinity(user), history[s.TRACK_ID])
    rng = np.random.default_rng([seed, user])
    slots, _ = stages.reranker({**candidates, s.SCORE: score}, [c.genre for c in clusters], pool, rng)
    return slots


def _pad(values: np.ndarray, depth: int) -> np.ndarray:
    row = np.full(depth, -1, dtype=np.int64)
    row[: min(depth, len(values))] = np.asarray(values, dtype=np.int64)[:depth]
    return row


def fit(training: TrainingSet, settings: Settings) -> SklearnScorer:
    """The production ranker (`fit_ranker`: histogram gradient boosting, the training settings) on `training`,
    without the features the data leaves missing on every row (the boosting cannot bin an empty column)."""
    from threadpoolctl import threadpool_limits

    present = [name for name in training.features.columns if training.features[name].notna().any()]
    usable = TrainingSet(training.features[present], training.label, training.weight, training.day)
    with threadpool_limits(1, "openmp"):  # one thread: OpenMP workers spin-wait badly on a shared machine
        return SklearnScorer(fit_ranker(usable, settings))
