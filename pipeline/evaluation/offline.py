"""Offline evaluation on HetRec 2011 Last.fm 2K: the platform's retrieval and ranker against known baselines.

Protocol (`dailymix eval hetrec PATH`): per user, a seeded random 20% of their artists is held out; every
method ranks all artists the user has not listened to in training. Metrics: recall@10, recall@100, NDCG@10
(binary relevance), catalog coverage@10 (distinct artists in anyone's top 10 / catalog size) and the mean
genre entropy (bits, top tag as genre, "unknown" counted as a genre) of each user's top 30.

Methods, all fitted on the same training split in the same run:

* `popularity` — artists by number of training listeners.
* `als` — exact search over implicit ALS (BM25-weighted, 64 factors): user · artist, all artists scored.
* `itemknn` — item-item cosine on the BM25-weighted matrix; a user's score is the sum of similarities.
* `retrieval_only` — the platform's first stage: the same ALS vectors in the configured ANN index (Annoy by
  default, tuned to recall@k ≥ 0.95 like the index DAG), queried with each user's vector for 300 candidates;
  a MIPS transform makes the cosine index return ALS's dot-product order, so this is "ALS through the ANN".
* `pipeline` — retrieval then the platform's kind of ranker (gradient boosting over user × candidate
  features: ALS and item-kNN scores with their within-user z-scores and ranks, log popularity, the user's
  share of the candidate's genre, the user's breadth, the candidate's vector norm). It reorders the first 50
  candidates. HetRec has no skips, so the ranker learns "is this a held-out favourite": it is trained on
  validation splits carved from each user's training artists (another 20%, two seeds), with every
  first-stage model refitted on the rest, so its features never saw the labels.

Baselines and pipeline share one ALS fit (the pipeline's final stage), so their difference is the index and
the ranker, nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from pipeline.core import schema as s
from pipeline.core.progress import progress

log = logging.getLogger(__name__)
HOLDOUT_SHARE = 0.2
FACTORS = 64
CANDIDATES = 300  # per user: 3x the deepest metric (recall@100), so the ranker has room to reorder
METRICS = ("recall@10", "recall@100", "ndcg@10", "coverage@10", "genre_entropy@30")
DEPTH = 100
FOLDS = 2  # validation splits the ranker learns from
HEAD = 50  # retrieval candidates the ranker reorders


# --- protocol -----------------------------------------------------------------------------------------------------


def holdout_mask(users: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for the rows held out: per user, round(share × n) of their n rows (at least 1 when n ≥ 2), drawn
    uniformly with a seeded generator. Vectorised: a random key per row, ranked within the user."""
    keys = np.random.default_rng(seed).random(len(users))
    frame = pd.DataFrame({"user": users, "key": keys})
    rank = frame.groupby("user")["key"].rank(method="first").to_numpy() - 1
    n = frame.groupby("user")["user"].transform("size").to_numpy()
    n_out = np.floor(share * n + 0.5)
    n_out = np.where(n >= 2, np.maximum(n_out, 1), 0)
    return rank < n_out


@dataclass(frozen=True)
class Split:
    """Binary users × items matrices (row = user index, column = catalog position) and item genres."""

    train: csr_matrix
    test: csr_matrix
    genres: np.ndarray  # genre code per item
    genre_names: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape


def _binary(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> csr_matrix:
    matrix = csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    matrix.data[:] = 1.0
    return matrix


def make_split(users: np.ndarray, items: np.ndarray, shape: tuple[int, int], genres: np.ndarray,
               genre_names: np.ndarray, seed: int, share: float = HOLDOUT_SHARE) -> Split:
    held = holdout_mask(users, share, seed)
    return Split(_binary(users[~held], items[~held], shape), _binary(users[held], items[held], shape), genres,
                 genre_names)


def resplit(split: Split, seed: int, share: float = HOLDOUT_SHARE) -> Split:
    """A validation split carved from the training matrix only (the test matrix is never looked at)."""
    users, items = split.train.nonzero()
    return make_split(users, items, split.shape, split.genres, split.genre_names, seed, share)


# --- metrics ------------------------------------------------------------------------------------------------------


def relevant_sets(test: csr_matrix) -> list[np.ndarray]:
    return [test.indices[test.indptr[u]: test.indptr[u + 1]] for u in range(test.shape[0])]


def recall_at(top: np.ndarray, relevant: list[np.ndarray], k: int) -> float:
    """Mean over users with held-out items of |top k ∩ held out| / |held out|."""
    values = [np.isin(row[:k], rel).sum() / len(rel) for row, rel in zip(top, relevant, strict=True) if len(rel)]
    return float(np.mean(values)) if values else 0.0


def ndcg_at(top: np.ndarray, relevant: list[np.ndarray], k: int) -> float:
    """Binary-relevance NDCG@k: DCG of the list over the DCG of min(k, |held out|) hits at the top."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    values = [
        float((np.isin(row[:k], rel) * discount[: len(row[:k])]).sum() / discount[: min(k, len(rel))].sum())
        for row, rel in zip(top, relevant, strict=True)
        if len(rel)
    ]
    return float(np.mean(values)) if values else 0.0


def coverage_at(top: np.ndarray, k: int, n_items: int) -> float:
    """Share of the catalog that appears in at least one user's top k."""
    shown = top[:, :k]
    return len(np.unique(shown[shown >= 0])) / n_items


def entropy_bits(labels: np.ndarray) -> float:
    """Shannon entropy (bits) of a list of labels; 0 for one label or none."""
    if len(labels) == 0:
        return 0.0
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def genre_entropy_at(top: np.ndarray, genres: np.ndarray, k: int) -> float:
    """Mean over users of the genre entropy of their top k: how varied one person's list is."""
    return float(np.mean([entropy_bits(genres[row[:k][row[:k] >= 0]]) for row in top])) if len(top) else 0.0


def all_metrics(top: np.ndarray, split: Split, users: np.ndarray) -> dict[str, float]:
    """The five metrics over the evaluated users (those with at least one held-out item)."""
    everyone = relevant_sets(split.test)
    relevant = [everyone[u] for u in users]
    top = top[users]
    return {
        "recall@10": recall_at(top, relevant, 10),
        "recall@100": recall_at(top, relevant, 100),
        "ndcg@10": ndcg_at(top, relevant, 10),
        "coverage@10": coverage_at(top, 10, split.shape[1]),
        "genre_entropy@30": genre_entropy_at(top, split.genres, 30),
    }


# --- models -------------------------------------------------------------------------------------------------------


def top_n(scores: np.ndarray, seen: csr_matrix, n: int) -> np.ndarray:
    """Item indices of the n best unseen items per user, best first (ties: lower index first)."""
    scores = np.array(scores, dtype=np.float64)
    scores[seen.nonzero()] = -np.inf
    n = min(n, scores.shape[1])
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def popularity_scores(train: csr_matrix) -> np.ndarray:
    """Training listeners per item, the same for every user."""
    counts = np.asarray(train.sum(axis=0)).ravel()
    return np.broadcast_to(counts, train.shape)


def bm25(train: csr_matrix) -> csr_matrix:
    from implicit.nearest_neighbours import bm25_weight

    return bm25_weight(train, K1=100, B=0.8).tocsr().astype(np.float32)


def itemknn_scores(train: csr_matrix) -> np.ndarray:
    """Σ over the user's items of cosine(item, candidate), on BM25-weighted columns."""
    from sklearn.preprocessing import normalize

    weighted = bm25(train)
    columns = normalize(weighted.tocsc(), axis=0)
    similarity = (columns.T @ columns).tocsr()
    similarity.setdiag(0)
    return (weighted @ similarity).toarray()


@dataclass(frozen=True)
class Als:
    """ALS vectors on the catalog's item positions (items unseen in training get zero vectors)."""

    users: np.ndarray
    items: np.ndarray

    def scores(self) -> np.ndarray:
        return self.users @ self.items.T


def fit_als_split(train: csr_matrix, seed: int, factors: int = FACTORS) -> Als:
    """The platform's `fit_als` (BM25-weighted implicit ALS) on the training matrix, one row per user × item."""
    import implicit.als  # noqa: F401  (loaded before the limit, so the limit covers its BLAS too)
    from threadpoolctl import threadpool_limits

    from pipeline.candidates.embeddings import fit_als
    from pipeline.core.config import RetrievalConfig

    users, items = train.nonzero()
    events = pd.DataFrame({s.USER_ID: users.astype("int64"), s.TRACK_ID: items.astype("int64")})
    with threadpool_limits(1, "blas"):  # implicit's advice: its own loop is the parallelism, BLAS threads thrash
        embeddings = fit_als(events, RetrievalConfig(factors=factors), seed)
    user_vectors = np.zeros((train.shape[0], factors), dtype=np.float32)
    item_vectors = np.zeros((train.shape[1], factors), dtype=np.float32)
    user_vectors[embeddings.user_ids] = embeddings.user_factors
    item_vectors[embeddings.track_ids] = embeddings.item_factors
    return Als(user_vectors, item_vectors)


# --- the platform: retrieval + ranker -----------------------------------------------------------------------------


def retrieve(als: Als, seen: csr_matrix, k: int, backend: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unseen items per user from the ANN index of the ALS item vectors, tuned to recall ≥ 0.95 at the
    query depth. The index is cosine; `mips_to_cosine` makes its order ALS's dot-product order. Over-fetches by
    the most items any user has seen, then drops the seen ones. Returns (items, ALS scores), best first."""
    from pipeline.candidates.ann import Tuning, build_for_recall, mips_to_cosine

    rows = np.flatnonzero(np.linalg.norm(als.items, axis=1) > 0)
    items, queries = mips_to_cosine(als.items[rows], als.users)
    depth = k + int(np.diff(seen.indptr).max())
    sample = np.random.default_rng(seed).choice(len(queries), size=min(200, len(queries)), replace=False)
    with tempfile.TemporaryDirectory() as directory:
        tuned = build_for_recall(backend, items, rows, Path(directory), seed, queries[sample], Tuning(k=depth))
        found, _ = tuned.index.query_batch(queries, depth)
    log.info("retrieval index (%s): recall@%d %.3f after %s", backend, depth, tuned.recall, tuned.attempts[-1])
    return _unseen(found, seen, k, als)


def _unseen(found: np.ndarray, seen: csr_matrix, k: int, als: Als) -> tuple[np.ndarray, np.ndarray]:
    candidates = np.full((len(found), k), -1, dtype=np.int64)
    for user, row in enumerate(found):
        row = row[(row >= 0) & ~np.isin(row, seen.indices[seen.indptr[user]: seen.indptr[user + 1]])][:k]
        candidates[user, : len(row)] = row
    safe = np.maximum(candidates, 0)
    scores = np.where(candidates >= 0, np.einsum("uf,ukf->uk", als.users, als.items[safe]), -np.inf)
    return candidates, scores


@dataclass(frozen=True)
class Stage:
    """Everything the ranker's features come from, fitted on one training matrix."""

    train: csr_matrix
    als: Als
    knn: np.ndarray
    candidates: np.ndarray
    retrieval: np.ndarray


def first_stage(train: csr_matrix, k: int, backend: str, seed: int, factors: int = FACTORS) -> Stage:
    als = fit_als_split(train, seed, factors)
    candidates, retrieval = retrieve(als, train, k, backend, seed)
    return Stage(train, als, itemknn_scores(train), candidates, retrieval)


def _within_user(values: np.ndarray) -> list[np.ndarray]:
    """A score as the ranker sees it: raw, z-scored within the user's candidates, and its rank there. The
    within-user views travel between the validation fit and the final fit (raw scores drift with data size)."""
    z = (values - values.mean(axis=1, keepdims=True)) / (values.std(axis=1, keepdims=True) + 1e-9)
    rank = np.argsort(np.argsort(-values, axis=1, kind="stable"), axis=1)
    return [values.ravel(), z.ravel(), rank.ravel()]


def ranker_features(stage: Stage, genres: np.ndarray) -> np.ndarray:
    """One row per (user, candidate): ALS and item-kNN scores, popularity, the user's share of the candidate's
    genre, the user's breadth and the candidate's ALS norm (how much evidence its vector has)."""
    users = np.repeat(np.arange(stage.train.shape[0]), stage.candidates.shape[1])
    items = np.maximum(stage.candidates.ravel(), 0)
    shape = stage.candidates.shape
    knn = stage.knn[users, items].reshape(shape)
    rows, cols = stage.train.nonzero()
    genre_counts = csr_matrix((np.ones(len(rows)), (rows, genres[cols])), shape=(shape[0], genres.max() + 1))
    share = genre_counts.toarray()[users, genres[items]] / np.maximum(
        np.asarray(stage.train.sum(axis=1)).ravel()[users], 1)
    popularity = np.asarray(stage.train.sum(axis=0)).ravel()
    return np.column_stack([
        *_within_user(stage.retrieval), *_within_user(knn), np.log1p(popularity[items]), share,
        np.log1p(np.asarray(stage.train.sum(axis=1)).ravel()[users]), np.linalg.norm(stage.als.items, axis=1)[items],
    ])


def train_ranker(split: Split, k: int, backend: str, seed: int, folds: int = FOLDS, head: int = HEAD,
                 factors: int = FACTORS):
    """Gradient boosting fitted on validation splits of the training artists: label 1 = a held-out
    (validation) artist among the user's first `head` candidates. Only the head is learned because only the
    head is reordered (NDCG@10 is decided there, and the deep tail is mostly easy negatives). `folds`
    validation splits with different seeds are stacked: more positives and less dependence on one draw."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    features, labels = [], []
    for fold in range(folds):
        validation = resplit(split, seed + 1 + fold)
        stage = first_stage(validation.train, k, backend, seed, factors)
        head_only = np.tile(np.arange(k) < head, split.shape[0])
        users = np.repeat(np.arange(split.shape[0]), k)
        found = np.asarray(validation.test[users, np.maximum(stage.candidates.ravel(), 0)]).ravel() > 0
        features.append(ranker_features(stage, split.genres)[head_only])
        labels.append((found & (stage.candidates.ravel() >= 0))[head_only])
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=seed)
    return model.fit(np.vstack(features), np.concatenate(labels))


def rerank(model, stage: Stage, genres: np.ndarray, head: int = HEAD) -> np.ndarray:
    """The first `head` candidates reordered by the ranker's score, best first; the rest keep retrieval order
    behind them (empty slots last)."""
    scores = model.predict_proba(ranker_features(stage, genres))[:, 1].reshape(stage.candidates.shape)
    depth = np.arange(stage.candidates.shape[1])[None, :]
    scores = np.where(depth < head, 2.0 + scores, -depth / stage.candidates.shape[1])
    scores = np.where(stage.candidates >= 0, scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(stage.candidates, order, axis=1)


# --- the run ------------------------------------------------------------------------------------------------------


def load_split(path: str | Path, seed: int) -> Split:
    from pipeline.evaluation.hetrec import load_hetrec

    data = load_hetrec(path)
    items = data.catalog[s.TRACK_ID].to_numpy()
    user_ids, users = np.unique(data.plays[s.USER_ID].to_numpy(), return_inverse=True)
    codes, names = pd.factorize(data.catalog[s.GENRE].astype(str), sort=True)
    columns = np.searchsorted(items, data.plays[s.TRACK_ID].to_numpy())
    return make_split(users, columns, (len(user_ids), len(items)), codes, np.asarray(names), seed)


def evaluate_split(split: Split, seed: int, backend: str = "annoy", candidates: int = CANDIDATES,
                   factors: int = FACTORS) -> dict:
    """Every method on one split; the JSON contract of `dailymix eval hetrec`. `factors` is ALS's dimension
    (64 on HetRec, as the baseline is defined; small synthetic worlds need fewer)."""
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        started = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - started
        return result

    done: dict = {}
    stages = {  # in order; later stages read earlier results from `done`
        "retrieval": lambda: first_stage(split.train, candidates, backend, seed, factors),
        "ranker_fit": lambda: train_ranker(split, candidates, backend, seed, factors=factors),
        "rerank": lambda: rerank(done["ranker_fit"], done["retrieval"], split.genres),
        "popularity": lambda: top_n(popularity_scores(split.train), split.train, DEPTH),
        "als": lambda: top_n(done["retrieval"].als.scores(), split.train, DEPTH),
        "itemknn": lambda: top_n(done["retrieval"].knn, split.train, DEPTH),
    }
    for name in progress(list(stages), desc="eval stages"):
        done[name] = timed(name, stages[name])
    stage, ranked = done["retrieval"], done["rerank"]
    tops = {name: done[name] for name in ("popularity", "als", "itemknn")}
    log.info("seconds per stage: %s", {k: round(v, 1) for k, v in timings.items()})
    return {
        "pipeline": all_metrics(ranked[:, :DEPTH], split, users),
        "retrieval_only": all_metrics(stage.candidates[:, :DEPTH], split, users),
        "baselines": {name: all_metrics(top, split, users) for name, top in tops.items()},
    }


def evaluate_hetrec(path: str | Path, seed: int = 0, backend: str = "annoy", candidates: int = CANDIDATES) -> dict:
    """`dailymix eval hetrec PATH`: the protocol above on the HetRec directory at `path` (read in place)."""
    return evaluate_split(load_split(path, seed), seed, backend, candidates)


def format_table(result: dict) -> str:
    """One row per method, one column per metric; the pipeline's NDCG@10 lift over ALS underneath."""
    rows = {"pipeline": result["pipeline"], "retrieval_only": result["retrieval_only"],
            **{f"baseline {k}": v for k, v in result["baselines"].items()}}
    lines = [f"{'method':<22}" + "".join(f"{m:>18}" for m in METRICS)]
    lines += [f"{name:<22}" + "".join(f"{values[m]:>18.4f}" for m in METRICS) for name, values in rows.items()]
    als = result["baselines"]["als"]["ndcg@10"]
    lift = result["pipeline"]["ndcg@10"] / als - 1 if als else float("nan")
    lines.append(f"\npipeline NDCG@10 vs exact ALS: {lift:+.1%}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dailymix eval", description="Offline evaluation on real data.")
    sub = parser.add_subparsers(dest="dataset", required=True)
    hetrec = sub.add_parser("hetrec", help="HetRec 2011 Last.fm 2K (artists as items)")
    add_hetrec_arguments(hetrec)
    return parser


def add_hetrec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="directory of the HetRec 2011 Last.fm 2K files (read in place)")
    parser.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of every model (default 0)")
    parser.add_argument("--backend", choices=["annoy", "voyager"], default="annoy", help="ANN backend")


def run_hetrec(args: argparse.Namespace) -> int:
    """Run, print the table, optionally write the JSON; exit 1 with a clear message when the data is missing."""
    started = time.perf_counter()
    try:
        result = evaluate_hetrec(args.path, seed=args.seed, backend=args.backend)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(result))
    print(f"({time.perf_counter() - started:.0f} s, seed {args.seed}, backend {args.backend})")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run_hetrec(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
