"""Index builds: the champion's track embeddings → ANN index tuned to a target recall → recall gate → published.

The index is only as good as its recall against exact search, so a build is measured on the queries the
nightly run will actually send (taste-cluster centroids of a seeded sample of recent listeners) and is not
published below the floor (`RetrievalConfig.min_recall`): the previous index for that model keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline.candidates.ann import (
    Tuning,
    backend_class,
    build_for_recall,
    index_size_bytes,
    load_index,
    normalise,
    recall_at_k,
)
from pipeline.candidates.embeddings import EMBEDDINGS_FILE, Embeddings
from pipeline.core import registry
from pipeline.core import schema as s
from pipeline.core.alerts import raise_alerts
from pipeline.core.config import RetrievalConfig, Settings
from pipeline.core.flow import Flow, FlowRun, Step
from pipeline.core.io import atomic_write_json, read_json
from pipeline.core.paths import Layout

log = logging.getLogger(__name__)
RECALL_K = 1000
QUERIES_FILE = "recall_queries.npy"


class RecallGateError(ValueError):
    """The index misses too many exact neighbours to serve; nothing was published."""


def index_dir(settings: Settings, version: str) -> Path:
    return Layout(settings.home).indexes / version


def by_model_path(settings: Settings, model_version: str) -> Path:
    return Layout(settings.home).indexes / "by-model" / f"{model_version}.json"


def export_embeddings(settings: Settings) -> dict:
    """Copy the champion's embeddings next to the indexes, so index and ranker always agree."""
    ref = registry.require_champion(settings)
    source = registry.download_artifact(settings, ref.run_id, f"embeddings/{EMBEDDINGS_FILE}")
    embeddings = Embeddings.load(source)
    target = Layout(settings.home).indexes / "embeddings" / f"{embeddings.version()}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return {"model_version": ref.version, "embeddings_path": str(target), "embeddings_version": embeddings.version()}


def tuning(config: RetrievalConfig) -> Tuning:
    """The build's effort knobs from settings (recall is measured at the nightly's fetch depth, 1000)."""
    return Tuning(target_recall=config.target_recall, k=RECALL_K, n_trees=config.n_trees, max_trees=config.max_trees,
                  search_k=config.search_k, m=config.voyager_m, ef_construction=config.voyager_ef_construction,
                  max_ef=config.voyager_max_ef, nlist=config.faiss_nlist, nprobe=config.faiss_nprobe,
                  max_nprobe=config.faiss_max_nprobe)


def indexable(embeddings: Embeddings) -> np.ndarray:
    """Tracks with a direction to search by (a zero vector has no cosine)."""
    return np.linalg.norm(embeddings.item_factors, axis=1) > 0


def recall_queries(settings: Settings, embeddings: Embeddings, day: str | None = None) -> np.ndarray:
    """Seeded sample of the query vectors the nightly run sends: taste-cluster centroids of users active in
    the `recent_days` before `day`. Without a day or history, the users' normalised ALS vectors stand in."""
    rng = np.random.default_rng(settings.seed)
    n = settings.retrieval.recall_sample
    queries = _taste_queries(settings, embeddings, day, rng, n) if day else np.empty((0, 0))
    if len(queries):
        return queries
    users = rng.choice(len(embeddings.user_ids), size=min(n, len(embeddings.user_ids)), replace=False)
    return normalise(embeddings.user_factors[np.sort(users)]).astype(np.float32)


def _taste_queries(settings: Settings, embeddings: Embeddings, day: str, rng: np.random.Generator,
                   n: int) -> np.ndarray:
    """Cluster centroids exactly as the nightly computes them (completed plays, same KMeans seed)."""
    from pipeline.candidates.taste import taste_clusters
    from pipeline.data.catalog import read_catalog
    from pipeline.data.events import read_raw_events
    from pipeline.features.definitions import window_days

    layout = Layout(settings.home)
    if not layout.catalog.exists():
        return np.empty((0, 0))
    events = read_raw_events(layout, window_days(day, settings.retrieval.recent_days))
    completed = events.loc[~events[s.SKIPPED], [s.USER_ID, s.TRACK_ID]]
    catalog = read_catalog(layout, [s.TRACK_ID, s.GENRE, s.MOOD])
    users = np.sort(completed[s.USER_ID].unique())
    sample = np.sort(rng.choice(users, size=min(n, len(users)), replace=False)) if len(users) else users
    item_row = embeddings.item_row
    queries: list[np.ndarray] = []
    for _, plays in completed.loc[completed[s.USER_ID].isin(sample)].groupby(s.USER_ID):
        plays = plays.merge(catalog, on=s.TRACK_ID)
        clusters = taste_clusters(plays, embeddings.item_factors, item_row, settings.rerank, settings.seed)
        queries.extend(c.query for c in clusters)
    return np.asarray(queries[:n], dtype=np.float32)


def index_version(embeddings: Embeddings, settings: Settings, queries: np.ndarray) -> str:
    """Content hash of what determines the index: vectors, backend, tuning knobs, seed and tuning queries."""
    digest = hashlib.sha256(f"{embeddings.version()}:{tuning(settings.retrieval)}:{settings.retrieval.backend}:"
                            f"{settings.seed}".encode())
    digest.update(np.ascontiguousarray(queries, dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


def build_index(settings: Settings, embeddings_path: str, day: str | None = None) -> dict:
    """Build (or reuse, when the content hash matches) the index, with the fewest trees meeting target_recall."""
    embeddings = Embeddings.load(Path(embeddings_path))
    queries = recall_queries(settings, embeddings, day)
    version = index_version(embeddings, settings, queries)
    directory = index_dir(settings, version)
    if (directory / "index.json").exists() and (directory / "build.json").exists():
        return read_json(directory / "build.json")
    staging = directory.with_name(f".{version}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    build = _build(settings, embeddings, queries, staging) | {"index_version": version}
    shutil.copyfile(embeddings_path, staging / "embeddings.npz")
    atomic_write_json(build, staging / "build.json")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    log.info("built index %s: %s", version, build)
    return build


def _build(settings: Settings, embeddings: Embeddings, queries: np.ndarray, directory: Path) -> dict:
    keep = indexable(embeddings)
    started = time.perf_counter()
    tuned = build_for_recall(settings.retrieval.backend, embeddings.item_factors[keep], embeddings.track_ids[keep],
                             directory, settings.seed, queries, tuning(settings.retrieval))
    np.save(directory / QUERIES_FILE, queries)
    return {"backend": settings.retrieval.backend, "embeddings_version": embeddings.version(),
            "items": int(keep.sum()), "build_seconds": round(time.perf_counter() - started, 3),
            "size_bytes": index_size_bytes(directory), **tuned.index.params, "tuning_recall": tuned.recall,
            "tuning_attempts": tuned.attempts, "recall_queries": len(queries)}


def measure_recall(settings: Settings, version: str) -> float:
    """recall@1000 of the index against exact search on the build's sample of nightly query vectors."""
    directory = index_dir(settings, version)
    embeddings = Embeddings.load(directory / "embeddings.npz")
    queries = np.load(directory / QUERIES_FILE)
    vectors = embeddings.item_factors[indexable(embeddings)]
    recall = recall_at_k(load_index(directory), queries, vectors, min(RECALL_K, len(vectors)))
    build = read_json(directory / "build.json")
    atomic_write_json({**build, "recall_at_1000": recall}, directory / "build.json")
    return recall


def gate_recall(settings: Settings, version: str, log_to_mlflow: bool = True) -> float:
    """Measure recall and refuse the index below `min_recall` (the rejected build is still logged to MLflow, so
    the UI shows why no new index went live)."""
    recall = measure_recall(settings, version)
    floor = settings.retrieval.min_recall
    if recall >= floor:
        return recall
    build = read_json(index_dir(settings, version) / "build.json")
    if log_to_mlflow:
        _log_to_mlflow(settings, {**build, "model_version": "", "status": "rejected"})
    raise RecallGateError(f"index {version} ({build['backend']} {_effort(build)}): recall@1000 {recall:.3f} < floor "
                          f"{floor:.2f}; the previous index keeps serving. Raise retrieval.max_trees "
                          "(annoy), retrieval.voyager_max_ef (voyager) or retrieval.faiss_max_nprobe (faiss) in "
                          "settings.json and clear the build.")


def _effort(build: dict) -> str:
    return ", ".join(f"{k}={build[k]}" for k in backend_class(build["backend"]).effort_keys)


def publish_index(settings: Settings, version: str, model_version: str) -> dict:
    """Record that `version` is the index serving `model_version` (one small atomic file)."""
    build = read_json(index_dir(settings, version) / "build.json")
    record = {**build, "model_version": model_version}
    atomic_write_json(record, by_model_path(settings, model_version))
    _log_to_mlflow(settings, {**record, "status": "published"})
    return record


def index_for_model(settings: Settings, model_version: str) -> dict:
    path = by_model_path(settings, model_version)
    if not path.exists():
        raise LookupError(f"no index published for model version {model_version}: run the dailymix_index DAG")
    return read_json(path)


def _log_to_mlflow(settings: Settings, record: dict) -> None:
    import mlflow

    registry.client(settings)
    params = {k: record[k] for k in ("index_version", "backend", "n_trees", "search_k", "m", "ef_construction", "ef",
                                     "nlist", "nprobe", "items", "recall_queries") if k in record}
    metrics = {k: float(record[k]) for k in ("recall_at_1000", "tuning_recall", "build_seconds", "size_bytes",
                                             "n_trees", "ef") if k in record}
    with mlflow.start_run(run_name=f"index-{record['index_version']}"):
        mlflow.set_tags({"dailymix.kind": "index", "dailymix.model_version": record["model_version"],
                         "dailymix.index_status": record["status"]})
        mlflow.log_params({**params, "target_recall": settings.retrieval.target_recall,
                           "min_recall": settings.retrieval.min_recall})
        mlflow.log_metrics(metrics)


RECALL_ALERTS = "recall_gate"  # the alert source of the recall gate


def _recall_gate(run: FlowRun) -> float:
    """The recall gate, its verdict stored as the day's `recall_gate` alerts (none when the index passes)."""
    try:
        recall = gate_recall(run.settings, run["build"]["index_version"])
    except RecallGateError as refused:
        raise_alerts(run.settings, run.day, RECALL_ALERTS, [str(refused)])
        raise
    raise_alerts(run.settings, run.day, RECALL_ALERTS, [])
    return recall


FLOW = Flow("dailymix_index", (
    Step("embeddings", lambda run: export_embeddings(run.settings)),
    Step("build", lambda run: build_index(run.settings, run["embeddings"]["embeddings_path"], run.day),
         after=("embeddings",)),
    Step("recall_gate", _recall_gate, after=("build",)),
    Step("publish", lambda run: publish_index(run.settings, run["build"]["index_version"],
                                              run["embeddings"]["model_version"]),
         after=("embeddings", "build", "recall_gate")),
))
