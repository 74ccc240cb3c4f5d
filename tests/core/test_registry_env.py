"""MLflow exports the tracking URI to os.environ; the registry client must not let one data root's store leak."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.core import registry
from pipeline.core.config import Settings, load_settings


@pytest.mark.slow
def test_client_keeps_the_environment_so_another_data_root_gets_its_own_store(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = Settings(home=tmp_path / "first")
    registry.client(first)
    assert mlflow.get_tracking_uri() == first.tracking_uri  # this process talks to the first store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert load_settings(tmp_path / "second").tracking_uri.endswith("second/mlruns/mlflow.db")


@pytest.mark.slow
def test_a_users_override_survives_the_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    registry.client(Settings(home=tmp_path, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'x.db'}"))
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
