"""The index recall gate: a deliberately weak index is refused and the previous index keeps serving its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.candidates.embeddings import Embeddings
from pipeline.candidates.index import (
    RecallGateError,
    build_index,
    by_model_path,
    gate_recall,
    index_dir,
    index_for_model,
    publish_index,
)
from pipeline.core.config import RetrievalConfig, Settings

MODEL_VERSION = "3"
WEAK = {"n_trees": 1, "max_trees": 1, "search_k": 10}  # one tree, 10 nodes searched for 1,000 neighbours


@pytest.fixture(scope="module")
def embeddings_path(tmp_path_factory) -> Path:
    """2,000 tracks and 300 users in 32 dimensions (random: no easy structure for a single tree to exploit)."""
    rng = np.random.default_rng(21)
    embeddings = Embeddings(
        user_ids=np.arange(300, dtype=np.int64) + 1,
        track_ids=np.arange(2000, dtype=np.int64) + 10_000,
        user_factors=rng.normal(size=(300, 32)).astype(np.float32),
        item_factors=rng.normal(size=(2000, 32)).astype(np.float32),
    )
    return embeddings.save(tmp_path_factory.mktemp("embeddings"))


def with_retrieval(settings: Settings, **changes) -> Settings:
    retrieval = RetrievalConfig.model_validate({**settings.retrieval.model_dump(), **changes})
    return settings.model_copy(update={"retrieval": retrieval})


def test_default_build_meets_the_target_and_passes_the_gate(settings: Settings, embeddings_path: Path) -> None:
    built = build_index(settings, str(embeddings_path))
    assert built["backend"] == "annoy" and built["tuning_recall"] >= 0.95
    assert built["n_trees"] == built["tuning_attempts"][-1]["n_trees"] >= settings.retrieval.n_trees
    assert gate_recall(settings, built["index_version"], log_to_mlflow=False) == pytest.approx(built["tuning_recall"])


def test_same_embeddings_and_seed_give_the_same_index_version(settings: Settings, embeddings_path: Path) -> None:
    first = build_index(settings, str(embeddings_path))
    again = build_index(settings.model_copy(update={"home": settings.home.parent / "elsewhere"}), str(embeddings_path))
    reseeded = build_index(settings.model_copy(update={"seed": settings.seed + 1}), str(embeddings_path))
    assert first["index_version"] == again["index_version"] != reseeded["index_version"]


@pytest.mark.slow
def test_weak_index_is_refused_and_the_previous_one_keeps_serving(settings: Settings, embeddings_path: Path) -> None:
    good = build_index(settings, str(embeddings_path))
    gate_recall(settings, good["index_version"], log_to_mlflow=False)
    publish_index(settings, good["index_version"], MODEL_VERSION)
    published = by_model_path(settings, MODEL_VERSION).read_bytes()

    weak_settings = with_retrieval(settings, **WEAK)
    weak = build_index(weak_settings, str(embeddings_path))
    assert weak["index_version"] != good["index_version"] and weak["n_trees"] == 1
    with pytest.raises(RecallGateError, match=r"recall@1000 0\.\d+ < floor 0\.90.*previous index keeps serving"):
        gate_recall(weak_settings, weak["index_version"])  # as the DAG's recall_gate task calls it

    assert by_model_path(settings, MODEL_VERSION).read_bytes() == published
    assert index_for_model(settings, MODEL_VERSION)["index_version"] == good["index_version"]
    assert (index_dir(settings, weak["index_version"]) / "build.json").exists()  # kept for inspection, not served
    _assert_mlflow_has_both_builds(settings, good["index_version"], weak["index_version"])


def test_the_floor_is_configurable(settings: Settings, embeddings_path: Path) -> None:
    lenient = with_retrieval(settings, **WEAK, min_recall=0.0)
    weak = build_index(lenient, str(embeddings_path))
    assert gate_recall(lenient, weak["index_version"], log_to_mlflow=False) < 0.9


def _assert_mlflow_has_both_builds(settings: Settings, good: str, weak: str) -> None:
    import mlflow

    runs = mlflow.search_runs(experiment_names=[settings.experiment_name])
    status = dict(zip(runs["params.index_version"], runs["tags.dailymix.index_status"], strict=True))
    assert status == {good: "published", weak: "rejected"}
    rejected = runs.loc[runs["params.index_version"] == weak].iloc[0]
    assert rejected["metrics.recall_at_1000"] < 0.9 and rejected["metrics.n_trees"] == 1
    assert rejected["metrics.build_seconds"] >= 0 and rejected["metrics.size_bytes"] > 0
