"""Weekly retraining, as three steps the retrain DAG wires: data → fit and register → promote."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import registry
from pipeline import schema as s
from pipeline.config import Settings
from pipeline.embeddings import Embeddings, fit_als
from pipeline.features import FEATURE_COLUMNS, LABEL, als_scores, window_days
from pipeline.ingest import read_raw_events
from pipeline.io import atomic_write_parquet
from pipeline.paths import Layout
from pipeline.ranker import TrainingSet, build_training_set, evaluate, fit_ranker
from pipeline.skew import SUITES_DIR, write_training_suites
from pipeline.world import read_world

log = logging.getLogger(__name__)
TRAINING_FILE = "training.parquet"
# We write and read these models ourselves; skops needs the tree type named to load it.
SKOPS_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
EMBEDDINGS_FILE = "embeddings.npz"


def training_dir(settings: Settings, day: str) -> Path:
    return Layout(settings.home).models / "training" / f"date={day}"


def prepare_training_data(settings: Settings, day: str) -> str:
    """Fit the ALS embeddings and build the point-in-time training set; both saved under the day."""
    layout = Layout(settings.home)
    catalog = read_world(layout).catalog
    events = read_raw_events(layout, window_days(day, settings.training.window_days))
    embeddings = fit_als(events, settings.retrieval, settings.seed)
    training = build_training_set(settings, day, catalog, embeddings)
    directory = training_dir(settings, day)
    embeddings.save(directory)
    frame = training.features.assign(
        **{LABEL: training.label, "weight": training.weight, "day": training.day,
           s.USER_ID: events[s.USER_ID].to_numpy(), s.TRACK_ID: events[s.TRACK_ID].to_numpy()}
    )
    atomic_write_parquet(frame, directory / TRAINING_FILE)
    write_training_suites(settings, day, directory)
    log.info("training set for %s: %d rows, %d users; embeddings %s", day, len(frame),
             frame[s.USER_ID].nunique(), embeddings.version())
    return str(directory)


def load_training_set(directory: Path) -> tuple[TrainingSet, pd.DataFrame]:
    frame = pd.read_parquet(directory / TRAINING_FILE)
    data = TrainingSet(frame[list(FEATURE_COLUMNS)], frame[LABEL].to_numpy(), frame["weight"].to_numpy(),
                       frame["day"].to_numpy())
    return data, frame[[s.USER_ID, s.TRACK_ID]]


def train_and_register(settings: Settings, day: str, directory: str) -> dict:
    """Fit the ranker on all but the holdout days, log it to MLflow and register a new version."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    data, _ = load_training_set(Path(directory))
    train, holdout = data.split(settings.training.holdout_days)
    model = fit_ranker(train, settings, use_weights=settings.training.use_ips)
    metrics = {**evaluate(model, holdout), "train_rows": float(len(train.label)),
               "train_positive_rate": float(train.label.mean())}
    embeddings = Embeddings.load(Path(directory))
    registry.client(settings)
    with mlflow.start_run(run_name=f"ranker-{day}") as run:
        mlflow.set_tags({"dailymix.training_day": day, "dailymix.embeddings_version": embeddings.version()})
        mlflow.log_params({**settings.training.model_dump(), **{f"als_{k}": v for k, v in
                           settings.retrieval.model_dump().items() if k.startswith(("factors", "als"))},
                           "seed": settings.seed, "features": ",".join(FEATURE_COLUMNS)})
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(Path(directory) / EMBEDDINGS_FILE), artifact_path="embeddings")
        mlflow.log_artifacts(str(Path(directory) / SUITES_DIR), artifact_path=SUITES_DIR)  # the skew gate's suites
        sample = train.features.head(20)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(sample, model.predict_proba(sample)[:, 1]),
            input_example=sample.head(3),
            registered_model_name=settings.model_name,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=_serving_requirements(),  # pinned here: inferring them costs a subprocess
        )
    version = str(info.registered_model_version)
    log.info("registered %s version %s (run %s): %s", settings.model_name, version, run.info.run_id, metrics)
    return {"version": version, "run_id": run.info.run_id, "metrics": metrics}


def _serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "numpy", "pandas", "scipy", "skops")]


def promote_if_better(settings: Settings, directory: str, candidate: dict) -> dict:
    """Move `champion` to the candidate when it is at least as good on the same holdout.

    Both models are scored on the candidate's holdout rows, each with its own embeddings, so
    the comparison is like for like.
    """
    current = registry.champion(settings)
    challenger_auc = candidate["metrics"].get("holdout_auc", float("nan"))
    decision = {"candidate": candidate["version"], "champion_before": current.version if current else None,
                "challenger_auc": challenger_auc}
    if current is None:
        registry.promote(settings, candidate["version"])
        return {**decision, "promoted": True, "reason": "no champion yet"}
    champion_auc = _champion_auc(settings, current, Path(directory))
    promoted = bool(np.isnan(champion_auc) or challenger_auc >= champion_auc)
    if promoted:
        registry.promote(settings, candidate["version"])
    reason = f"holdout AUC {challenger_auc:.4f} vs champion {champion_auc:.4f}"
    log.info("%s version %s: %s", "promoted" if promoted else "kept champion over", candidate["version"], reason)
    registry.client(settings).set_model_version_tag(settings.model_name, candidate["version"], "dailymix.promotion",
                                                    f"{'promoted' if promoted else 'rejected'}: {reason}")
    return {**decision, "champion_auc": champion_auc, "promoted": promoted, "reason": reason}


def _champion_auc(settings: Settings, ref: registry.ModelRef, directory: Path) -> float:
    data, ids = load_training_set(directory)
    path = registry.download_artifact(settings, ref.run_id, f"embeddings/{EMBEDDINGS_FILE}")
    embeddings = Embeddings.load(path)
    features = data.features.assign(als_score=als_scores(ids, embeddings.lookup()))
    rescored = TrainingSet(features, data.label, data.weight, data.day)
    _, holdout = rescored.split(settings.training.holdout_days)
    return evaluate(registry.load_model(settings, ref), holdout).get("holdout_auc", float("nan"))
