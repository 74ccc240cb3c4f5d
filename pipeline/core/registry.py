"""MLflow: experiment runs, the `dailymix-ranker` registered model and its `champion` alias."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.config import Settings

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"  # a registered version the gate did not promote


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and the run that trained it."""

    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def client(settings: Settings):
    """An MlflowClient on this installation's tracking store, with the experiment created."""
    import mlflow

    with _environment_kept("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)
    if mlflow.get_experiment_by_name(settings.experiment_name) is None:
        mlflow.create_experiment(settings.experiment_name, artifact_location=_artifact_location(settings.artifact_root))
    mlflow.set_experiment(settings.experiment_name)
    return mlflow.MlflowClient()


@contextmanager
def _environment_kept(*names: str) -> Iterator[None]:
    """Undo MLflow's export of the URIs to os.environ: `load_settings` reads MLFLOW_TRACKING_URI as the user's
    override, so one data root's store must not leak into the next data root (or Airflow run) of this process."""
    before = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _artifact_location(root: str) -> str:
    """A URI as given (s3://, mlflow-artifacts:/, ...); a local path created and made a file:// URI."""
    if "://" in root or root.startswith("mlflow-artifacts:"):
        return root
    Path(root).mkdir(parents=True, exist_ok=True)
    return Path(root).as_uri()


def champion(settings: Settings) -> ModelRef | None:
    """The version the alias points at, or None before the first promotion."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    try:
        version = mlflow_client.get_model_version_by_alias(settings.model_name, CHAMPION)
    except MlflowException:
        return None
    return ModelRef(settings.model_name, str(version.version), version.run_id)


def require_champion(settings: Settings) -> ModelRef:
    ref = champion(settings)
    if ref is None:
        raise LookupError(f"no '{CHAMPION}' alias on {settings.model_name}: run the dailymix_retrain DAG first")
    return ref


def promote(settings: Settings, version: str) -> None:
    client(settings).set_registered_model_alias(settings.model_name, CHAMPION, version)


def set_alias(settings: Settings, version: str, alias: str) -> None:
    client(settings).set_registered_model_alias(settings.model_name, alias, version)


def rollback(settings: Settings, version: str) -> str | None:
    """Point `champion` at an existing version (e.g. the previous one); returns the version it pointed at before.

    Raises LookupError for a version that does not exist, so a typo cannot leave serving without a model.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    try:
        mlflow_client.get_model_version(settings.model_name, str(version))
    except MlflowException as error:
        raise LookupError(f"{settings.model_name} has no version {version}") from error
    before = champion(settings)
    mlflow_client.set_registered_model_alias(settings.model_name, CHAMPION, str(version))
    mlflow_client.set_model_version_tag(settings.model_name, str(version), "dailymix.rollback_from",
                                        before.version if before else "none")
    log.info("alias %s of %s: version %s -> %s", CHAMPION, settings.model_name, before and before.version, version)
    return before.version if before else None


def log_run_metrics(settings: Settings, run_id: str, metrics: dict[str, float]) -> None:
    """Add metrics to a finished run (the promotion step's view of the champion, beside the challenger's own)."""
    from mlflow.entities import Metric

    mlflow_client = client(settings)
    stamp = int(time.time() * 1000)  # MLflow's own clock for log entries; no data depends on it
    mlflow_client.log_batch(run_id, metrics=[Metric(key, float(value), stamp, 0) for key, value in metrics.items()])


def load_model(settings: Settings, ref: ModelRef):
    import mlflow.sklearn

    client(settings)
    return mlflow.sklearn.load_model(ref.uri)


def download_artifact(settings: Settings, run_id: str, artifact_path: str, destination: Path | None = None) -> Path:
    import mlflow

    client(settings)
    target = destination or Path(tempfile.mkdtemp(prefix="dailymix-"))
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=str(target)))
