"""Index builds: the champion's track embeddings → Annoy → recall gate → published for that model."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from pipeline import registry
from pipeline.ann import AnnoyIndex, normalise, recall_at_k
from pipeline.config import Settings
from pipeline.embeddings import Embeddings
from pipeline.io import atomic_write_json, read_json
from pipeline.paths import Layout
from pipeline.retrain import EMBEDDINGS_FILE

log = logging.getLogger(__name__)
RECALL_K = 1000


def index_dir(settings: Settings, version: str) -> Path:
    return Layout(settings.home).indexes / version


def export_embeddings(settings: Settings) -> dict:
    """Copy the champion's embeddings next to the indexes, so index and ranker always agree."""
    ref = registry.require_champion(settings)
    source = registry.download_artifact(settings, ref.run_id, f"embeddings/{EMBEDDINGS_FILE}")
    embeddings = Embeddings.load(source)
    target = Layout(settings.home).indexes / "embeddings" / f"{embeddings.version()}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return {"model_version": ref.version, "embeddings_path": str(target), "embeddings_version": embeddings.version()}


def index_version(embeddings: Embeddings, settings: Settings) -> str:
    """Content hash of what determines the index: vectors, build parameters and seed."""
    config = settings.retrieval
    key = f"{embeddings.version()}:{config.n_trees}:{config.search_k}:{settings.seed}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def indexable(embeddings: Embeddings) -> np.ndarray:
    """Tracks with a direction to search by (a zero vector has no cosine)."""
    return np.linalg.norm(embeddings.item_factors, axis=1) > 0


def build_index(settings: Settings, embeddings_path: str) -> dict:
    """Build (or reuse, when the content hash matches) the Annoy index of the embeddings."""
    embeddings = Embeddings.load(Path(embeddings_path))
    version = index_version(embeddings, settings)
    directory = index_dir(settings, version)
    if (directory / "index.json").exists() and (directory / "build.json").exists():
        return read_json(directory / "build.json")
    keep = indexable(embeddings)
    started = time.perf_counter()
    staging = directory.with_name(f".{version}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    AnnoyIndex.build(embeddings.item_factors[keep], embeddings.track_ids[keep], staging,
                     settings.retrieval.n_trees, settings.seed, settings.retrieval.search_k)
    shutil.copyfile(embeddings_path, staging / "embeddings.npz")
    build = {"index_version": version, "embeddings_version": embeddings.version(), "items": int(keep.sum()),
             "build_seconds": round(time.perf_counter() - started, 3),
             "size_bytes": (staging / "tracks.ann").stat().st_size}
    atomic_write_json(build, staging / "build.json")
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    log.info("built index %s: %s", version, build)
    return build


def measure_recall(settings: Settings, version: str) -> float:
    """recall@1000 of the index against exact search, on a seeded sample of user vectors."""
    directory = index_dir(settings, version)
    index = AnnoyIndex.load(directory)
    embeddings = Embeddings.load(directory / "embeddings.npz")
    rng = np.random.default_rng(settings.seed)
    n = min(settings.retrieval.recall_sample, len(embeddings.user_ids))
    queries = normalise(embeddings.user_factors[rng.choice(len(embeddings.user_ids), size=n, replace=False)])
    vectors = embeddings.item_factors[indexable(embeddings)]
    recall = recall_at_k(index, queries, vectors, min(RECALL_K, len(vectors)))
    build = read_json(directory / "build.json")
    atomic_write_json({**build, "recall_at_1000": recall, "recall_queries": n}, directory / "build.json")
    return recall


def publish_index(settings: Settings, version: str, model_version: str) -> dict:
    """Record that `version` is the index serving `model_version` (one small atomic file)."""
    build = read_json(index_dir(settings, version) / "build.json")
    record = {**build, "model_version": model_version}
    atomic_write_json(record, Layout(settings.home).indexes / "by-model" / f"{model_version}.json")
    _log_to_mlflow(settings, record)
    return record


def index_for_model(settings: Settings, model_version: str) -> dict:
    path = Layout(settings.home).indexes / "by-model" / f"{model_version}.json"
    if not path.exists():
        raise LookupError(f"no index published for model version {model_version}: run the dailymix_index DAG")
    return read_json(path)


def _log_to_mlflow(settings: Settings, record: dict) -> None:
    import mlflow

    registry.client(settings)
    with mlflow.start_run(run_name=f"index-{record['index_version']}"):
        mlflow.set_tags({"dailymix.kind": "index", "dailymix.model_version": record["model_version"]})
        mlflow.log_params({"index_version": record["index_version"], "n_trees": settings.retrieval.n_trees,
                           "search_k": settings.retrieval.search_k, "items": record["items"]})
        mlflow.log_metrics({k: float(record[k]) for k in ("recall_at_1000", "build_seconds", "size_bytes")
                            if k in record})
