"""Weekly retraining in three steps, `FLOW` (its DAG and the simulation run it): data → fit and register → promote."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.candidates.embeddings import EMBEDDINGS_FILE, Embeddings, fit_als
from pipeline.core import registry
from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.flow import Flow, Step
from pipeline.core.io import atomic_write_parquet
from pipeline.core.paths import Layout
from pipeline.data.catalog import read_catalog
from pipeline.data.events import read_exploration_events, read_raw_events
from pipeline.features.definitions import FEATURE_COLUMNS, LABEL, als_scores, window_days
from pipeline.features.skew import SUITES_DIR, write_training_suites
from pipeline.scoring.ranker import TrainingSet, build_training_set, evaluate, fit_ranker, ips_weights, ndcg_at_k
from pipeline.train.model_report import calibration_figure, feature_importance_figure
from pipeline.train.ope import BanditLog, evaluate_policy, tilted_policy
from pipeline.train.slots import attach_slots, published_slots

log = logging.getLogger(__name__)
TRAINING_FILE = "training.parquet"
# We write and read these models ourselves; skops needs the tree type named to load it.
SKOPS_TRUSTED_TYPES = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
# Who heard what, and which slot (mix, position) under which policy and propensity placed it: OPE needs them all.
SLOT_KEYS = [s.USER_ID, s.TRACK_ID, s.TS, s.MIX_ID, s.POSITION, s.POLICY, s.PROPENSITY]
OPE_ARTIFACT, IMPORTANCE_PLOT, CALIBRATION_PLOT = "ope/estimates.json", "plots/feature_importance.png", \
    "plots/calibration.png"
CHAMPION_TAG, REASON_TAG = "dailymix.promotion", "dailymix.promotion_reason"


def training_dir(settings: Settings, day: str) -> Path:
    return Layout(settings.home).models / "training" / f"date={day}"


def prepare_training_data(settings: Settings, day: str) -> str:
    """Fit the ALS embeddings and build the point-in-time training set; both saved under the day."""
    layout = Layout(settings.home)
    catalog = read_catalog(layout)
    events = read_raw_events(layout, window_days(day, settings.training.window_days))
    # Policy and propensity come from the slot the re-ranker published, not from what the client reported.
    events, slot_join = attach_slots(events, published_slots(settings, events[s.MIX_ID]))
    embeddings = fit_als(events, settings.retrieval, settings.seed)
    training = build_training_set(settings, day, catalog, embeddings)
    directory = training_dir(settings, day)
    embeddings.save(directory)
    frame = training.features.assign(
        **{LABEL: training.label, "weight": ips_weights(events, settings.training.propensity_clip),
           "day": training.day, **{column: events[column].to_numpy() for column in SLOT_KEYS}}
    )
    log.info("slot join of mix-driven events: %s", slot_join)
    atomic_write_parquet(frame, directory / TRAINING_FILE)
    write_training_suites(settings, day, directory)
    log.info("training set for %s: %d rows, %d users; embeddings %s", day, len(frame),
             frame[s.USER_ID].nunique(), embeddings.version())
    return str(directory)


def load_training_set(directory: Path) -> tuple[TrainingSet, pd.DataFrame]:
    frame = pd.read_parquet(directory / TRAINING_FILE)
    data = TrainingSet(frame[list(FEATURE_COLUMNS)], frame[LABEL].to_numpy(), frame["weight"].to_numpy(),
                       frame["day"].to_numpy())
    return data, frame[[column for column in SLOT_KEYS if column in frame.columns]]


def train_and_register(settings: Settings, day: str, directory: str) -> dict:
    """Fit the ranker on all but the holdout days, evaluate it, log it to MLflow and register a new version.

    Metrics: AUC, log loss and NDCG@10 on the time-split holdout; IPS/SNIPS/DR completion estimates (with
    bootstrap intervals) on the holdout days' exploration logs. Artifacts: embeddings, the skew suites (the
    training data's profile), feature-importance and calibration plots, the OPE estimates as JSON.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    data, ids = load_training_set(Path(directory))
    train, holdout = data.split(settings.training.holdout_days)
    _, holdout_ids = _split_ids(data, ids, settings.training.holdout_days)
    model = fit_ranker(train, settings, use_weights=settings.training.use_ips)
    metrics = {**evaluate(model, holdout), "train_rows": float(len(train.label)),
               "train_positive_rate": float(train.label.mean())}
    proba = model.predict_proba(holdout.features)[:, 1] if len(holdout.label) else np.array([])
    if len(holdout.label):
        metrics["holdout_ndcg_at_10"] = ndcg_at_k(holdout.label, proba, _play_groups(holdout_ids))
    ope = off_policy_estimates(settings, model, holdout, holdout_ids)
    metrics.update(_ope_metrics(ope))
    embeddings = Embeddings.load(Path(directory))
    lineage = _lineage(settings, day, data)
    registry.client(settings)
    with mlflow.start_run(run_name=f"ranker-{day}") as run:
        mlflow.set_tags({"dailymix.training_day": day, "dailymix.embeddings_version": embeddings.version(),
                         **{f"dailymix.{k}": str(v) for k, v in lineage.items()}})
        mlflow.log_params({**settings.training.model_dump(), **{f"als_{k}": v for k, v in
                           settings.retrieval.model_dump().items() if k.startswith(("factors", "als"))},
                           **{f"promotion_{k}": v for k, v in settings.promotion.model_dump().items()},
                           "seed": settings.seed, "features": ",".join(FEATURE_COLUMNS)})
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(Path(directory) / EMBEDDINGS_FILE), artifact_path="embeddings")
        mlflow.log_artifacts(str(Path(directory) / SUITES_DIR), artifact_path=SUITES_DIR)  # the skew gate's suites
        mlflow.log_dict(ope, OPE_ARTIFACT)
        _log_figures(settings, model, holdout, proba)
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
    mlflow_client = registry.client(settings)
    for key, value in lineage.items():  # which data made this version, visible on the version's own page
        mlflow_client.set_model_version_tag(settings.model_name, version, f"dailymix.{key}", str(value))
    log.info("registered %s version %s (run %s): %s", settings.model_name, version, run.info.run_id, metrics)
    return {"version": version, "run_id": run.info.run_id, "metrics": metrics}


def _lineage(settings: Settings, day: str, data: TrainingSet) -> dict[str, str | int]:
    from pipeline.features.store import feature_version

    days = np.unique(data.day)
    return {"training_start": str(days[0]), "training_end": str(days[-1]), "training_rows": len(data.label),
            "feature_version": feature_version(settings, day), "ips": str(settings.training.use_ips).lower()}


def _split_ids(data: TrainingSet, ids: pd.DataFrame, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The slot columns of the rows `TrainingSet.split` puts on each side."""
    marker = TrainingSet(pd.DataFrame({"row": np.arange(len(data.label))}), data.label, data.weight, data.day)
    train, holdout = marker.split(holdout_days)
    return (ids.iloc[train.features["row"].to_numpy()].reset_index(drop=True),
            ids.iloc[holdout.features["row"].to_numpy()].reset_index(drop=True))


def _play_groups(ids: pd.DataFrame) -> np.ndarray:
    """One ranking per user and day: NDCG asks whether the plays that completed were scored above the skips."""
    return (ids[s.USER_ID].astype(str) + "@" + ids[s.TS].dt.strftime("%Y-%m-%d")).to_numpy()


def off_policy_estimates(settings: Settings, model, holdout: TrainingSet, holdout_ids: pd.DataFrame) -> dict:
    """IPS/SNIPS/DR completion of the ranker-tilted exploration policy on the holdout's exploration logs.

    The logs are the exploration partition (`raw/exploration/`) of the holdout days, matched to their
    feature rows by (user, track, ts). See `ope.tilted_policy` for the evaluated policy.
    """
    days = sorted(set(holdout.day.tolist()))
    logged = read_exploration_events(Layout(settings.home), days)[[s.USER_ID, s.TRACK_ID, s.TS]]
    keys = holdout_ids[[s.USER_ID, s.TRACK_ID, s.TS]].reset_index(names="row")
    rows = keys.merge(logged.drop_duplicates(), on=[s.USER_ID, s.TRACK_ID, s.TS], how="inner")["row"].to_numpy()
    result = {"policy": f"exploration tilted by the ranker, temperature {settings.promotion.target_temperature}",
              "days": days, "events": len(rows), "mixes": int(holdout_ids[s.MIX_ID].iloc[rows].nunique())}
    if len(rows) < settings.promotion.min_exploration_events:
        return {**result, "estimates": {}}
    score = model.predict_proba(holdout.features.iloc[rows])[:, 1]
    context = holdout_ids[s.MIX_ID].iloc[rows].to_numpy()
    weights, q_target = tilted_policy(score, score, context, settings.promotion.target_temperature)
    log_ = BanditLog(holdout.label[rows].astype(float), weights, score, q_target, context)
    estimates = evaluate_policy(log_, settings.promotion.bootstrap_samples, settings.promotion.confidence,
                                settings.seed)
    logging_value = float(holdout.label[rows].mean())
    return {**result, "logging_policy_completion": logging_value,
            "estimates": {name: estimate.as_dict() for name, estimate in estimates.items()}}


def _ope_metrics(ope: dict) -> dict[str, float]:
    metrics = {"ope_exploration_events": float(ope["events"])}
    for name, estimate in ope["estimates"].items():
        metrics.update({f"ope_{name}": estimate["value"], f"ope_{name}_low": estimate["low"],
                        f"ope_{name}_high": estimate["high"]})
    return metrics


def _log_figures(settings: Settings, model, holdout: TrainingSet, proba: np.ndarray) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    if len(np.unique(holdout.label)) < 2:
        log.warning("holdout has one class only: no importance or calibration plot")
        return
    figures = [(calibration_figure(holdout.label, proba), CALIBRATION_PLOT)]
    if settings.training.importance_rows:
        figures.append((feature_importance_figure(model, holdout.features, holdout.label, settings.seed,
                                                  settings.training.importance_rows), IMPORTANCE_PLOT))
    for figure, name in figures:
        mlflow.log_figure(figure, name)
        plt.close(figure)


def _serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "numpy", "pandas", "scipy", "skops")]


def promote_if_better(settings: Settings, directory: str, candidate: dict) -> dict:
    """Alias `champion` moves to the candidate unless off-policy evaluation says it is worse; else `challenger`.

    Both models are evaluated on the same held-out exploration logs (each with its own embeddings), so the
    comparison is like for like. The gate is SNIPS: the candidate loses only if its estimate is below the
    champion's by more than `promotion.snips_tolerance`. With too few exploration events for OPE it falls
    back to holdout AUC, and says so. The decision and its reason are tags on the version and in the log.
    """
    current = registry.champion(settings)
    decision = {"candidate": candidate["version"], "champion_before": current.version if current else None}
    if current is None:
        promoted, reason = True, "no champion yet"
    else:
        promoted, reason, compared = _compare(settings, current, candidate, Path(directory))
        decision.update(compared)
        registry.log_run_metrics(settings, candidate["run_id"], compared)
    registry.set_alias(settings, candidate["version"], registry.CHAMPION if promoted else registry.CHALLENGER)
    outcome = "promoted" if promoted else "rejected"
    mlflow_client = registry.client(settings)
    mlflow_client.set_model_version_tag(settings.model_name, candidate["version"], CHAMPION_TAG, outcome)
    mlflow_client.set_model_version_tag(settings.model_name, candidate["version"], REASON_TAG, reason)
    log.info("%s %s version %s: %s", outcome, settings.model_name, candidate["version"], reason)
    return {**decision, "promoted": promoted, "reason": reason}


def _compare(settings: Settings, current: registry.ModelRef, candidate: dict,
             directory: Path) -> tuple[bool, str, dict[str, float]]:
    data, ids = load_training_set(directory)
    path = registry.download_artifact(settings, current.run_id, f"embeddings/{EMBEDDINGS_FILE}")
    features = data.features.assign(als_score=als_scores(ids[[s.USER_ID, s.TRACK_ID]], Embeddings.load(path).lookup()))
    rescored = TrainingSet(features, data.label, data.weight, data.day)
    _, holdout = rescored.split(settings.training.holdout_days)
    _, holdout_ids = _split_ids(rescored, ids, settings.training.holdout_days)
    champion_model = registry.load_model(settings, current)
    champion_ope = off_policy_estimates(settings, champion_model, holdout, holdout_ids)
    challenger = candidate["metrics"]
    if "snips" in champion_ope["estimates"] and "ope_snips" in challenger:
        ours, theirs = challenger["ope_snips"], champion_ope["estimates"]["snips"]
        margin = ours - theirs["value"]
        promoted = margin >= -settings.promotion.snips_tolerance
        reason = (f"SNIPS completion {ours:.4f} [{challenger['ope_snips_low']:.4f}, {challenger['ope_snips_high']:.4f}]"
                  f" vs champion v{current.version} {theirs['value']:.4f} [{theirs['low']:.4f}, {theirs['high']:.4f}]"
                  f" on {champion_ope['events']} held-out exploration events: "
                  + (f"{'better' if margin >= 0 else 'worse'} by {abs(margin):.4f}"
                     + ("" if promoted else f", more than the tolerance {settings.promotion.snips_tolerance}")))
        return promoted, reason, {"champion_ope_snips": theirs["value"], "champion_ope_snips_low": theirs["low"],
                                  "champion_ope_snips_high": theirs["high"]}
    champion_auc = evaluate(champion_model, holdout).get("holdout_auc", float("nan"))
    challenger_auc = challenger.get("holdout_auc", float("nan"))
    promoted = bool(np.isnan(champion_auc) or challenger_auc >= champion_auc)
    minimum = settings.promotion.min_exploration_events
    reason = (f"only {champion_ope['events']} held-out exploration events (< {minimum}"
              f") for off-policy evaluation, so gated on holdout AUC: {challenger_auc:.4f} vs champion "
              f"v{current.version} {champion_auc:.4f}")
    return promoted, reason, {"champion_holdout_auc": champion_auc}


FLOW = Flow("dailymix_retrain", (
    Step("training_data", lambda run: prepare_training_data(run.settings, run.day)),
    Step("fit_and_register", lambda run: train_and_register(run.settings, run.day, run["training_data"]),
         after=("training_data",)),
    Step("promote", lambda run: promote_if_better(run.settings, run["training_data"], run["fit_and_register"]),
         after=("training_data", "fit_and_register")),
))
