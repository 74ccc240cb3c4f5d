"""The promotion gate against a real MLflow SQLite store: a worse challenger stays `challenger`, a better one wins.

The training directory is synthetic but complete (what `prepare_training_data` writes): feature rows whose
label depends on `genre_affinity` only, exploit and explore slots of one mix per user and day, the explore
rows also in the exploration partition, real ALS-shaped embeddings. "Worse" = trained on shuffled labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.candidates.embeddings import Embeddings
from pipeline.core import registry
from pipeline.core import schema as s
from pipeline.core.config import PromotionConfig, Settings, TrainingConfig
from pipeline.core.paths import Layout
from pipeline.data.events import write_exploration
from pipeline.features.definitions import FEATURE_COLUMNS, LABEL, als_scores
from pipeline.features.skew import SUITES_DIR
from pipeline.train.retrain import (
    CALIBRATION_PLOT,
    CHAMPION_TAG,
    IMPORTANCE_PLOT,
    OPE_ARTIFACT,
    REASON_TAG,
    TRAINING_FILE,
    promote_if_better,
    train_and_register,
)

pytestmark = pytest.mark.slow  # real training, Great Expectations or fuzzing: seconds per test

DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]
N_USERS, N_TRACKS, EXPLOIT, EXPLORE = 150, 400, 12, 4


def _embeddings(rng: np.random.Generator) -> Embeddings:
    return Embeddings(np.arange(N_USERS), np.arange(N_TRACKS), rng.normal(size=(N_USERS, 4)),
                      rng.normal(size=(N_TRACKS, 4)))


def _training_frame(rng: np.random.Generator, embeddings: Embeddings) -> pd.DataFrame:
    rows = []
    for day in DAYS:
        for user in range(N_USERS):
            tracks = rng.choice(N_TRACKS, size=EXPLOIT + EXPLORE, replace=False)
            for position, track in enumerate(tracks):
                explore = position >= EXPLOIT
                rows.append({s.USER_ID: user, s.TRACK_ID: int(track), s.MIX_ID: f"{day}:{user}:0",
                             s.POSITION: position, s.POLICY: s.POLICY_EXPLORE if explore else s.POLICY_EXPLOIT,
                             s.PROPENSITY: 0.05 if explore else 1.0, "day": day,
                             s.TS: pd.Timestamp(day, tz="UTC") + pd.Timedelta(minutes=position + 60 * (user % 20))})
    frame = pd.DataFrame(rows)
    features = pd.DataFrame(rng.random((len(frame), len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    features["known"] = (features["known"] > 0.5).astype(float)
    features["als_score"] = als_scores(frame, embeddings.lookup())
    p_complete = 1 / (1 + np.exp(-8 * (features["genre_affinity"] - 0.5)))
    frame = pd.concat([features, frame], axis=1)
    frame[LABEL] = (rng.random(len(frame)) < p_complete).astype("int64")
    frame["weight"] = 1.0
    frame[s.POSITION] = frame[s.POSITION].astype("Int64")
    return frame


def _directory(root: Path, name: str, frame: pd.DataFrame, embeddings: Embeddings, shuffle: bool,
               rng: np.random.Generator) -> str:
    directory = root / name
    directory.mkdir(parents=True)
    frame = frame.copy()
    if shuffle:  # scramble the training days' labels; the holdout (last day) keeps the truth
        train = frame["day"] != DAYS[-1]
        frame.loc[train, LABEL] = rng.permutation(frame.loc[train, LABEL].to_numpy())
    frame.to_parquet(directory / TRAINING_FILE, index=False)
    embeddings.save(directory)
    (directory / SUITES_DIR).mkdir()
    (directory / SUITES_DIR / "users.json").write_text("{}")
    return str(directory)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pd.DataFrame, Embeddings]:
    home = tmp_path_factory.mktemp("promotion-home")
    settings = Settings(home=home, training=TrainingConfig(holdout_days=1, max_iter=20),
                        promotion=PromotionConfig(min_exploration_events=100, bootstrap_samples=100))
    rng = np.random.default_rng(21)
    embeddings = _embeddings(rng)
    frame = _training_frame(rng, embeddings)
    held_out = frame.loc[frame["day"] == DAYS[-1]]
    events = held_out.assign(**{s.SKIPPED: held_out[LABEL] == 0, s.MS_PLAYED: 30_000})[list(s.EVENT_COLUMNS)]
    write_exploration(events.astype(s.EVENT_DTYPES), Layout(home).exploration(DAYS[-1]) / "sim.parquet")
    return settings, frame, embeddings


def test_worse_challenger_is_not_promoted_and_a_better_one_is(world, tmp_path: Path) -> None:
    import mlflow

    settings, frame, embeddings = world
    rng = np.random.default_rng(5)
    client = registry.client(settings)

    first = train_and_register(settings, DAYS[-1], _directory(tmp_path, "v1", frame, embeddings, True, rng))
    assert promote_if_better(settings, "unused", first)["reason"] == "no champion yet"

    better = train_and_register(settings, DAYS[-1], _directory(tmp_path, "v2", frame, embeddings, False, rng))
    decision = promote_if_better(settings, str(tmp_path / "v2"), better)
    assert decision["promoted"], decision["reason"]
    assert "better by" in decision["reason"] and "SNIPS" in decision["reason"]
    assert registry.champion(settings).version == better["version"]
    assert better["metrics"]["ope_snips"] > decision["champion_ope_snips"]

    worse = train_and_register(settings, DAYS[-1], _directory(tmp_path, "v3", frame, embeddings, True, rng))
    decision = promote_if_better(settings, str(tmp_path / "v3"), worse)
    assert not decision["promoted"]
    assert "worse by" in decision["reason"] and "more than the tolerance" in decision["reason"]
    assert registry.champion(settings).version == better["version"]
    assert str(client.get_model_version_by_alias(settings.model_name, registry.CHALLENGER).version) == worse["version"]
    tags = client.get_model_version(settings.model_name, worse["version"]).tags
    assert tags[CHAMPION_TAG] == "rejected" and tags[REASON_TAG] == decision["reason"]
    assert tags["dailymix.training_start"] == DAYS[0] and tags["dailymix.training_end"] == DAYS[-1]
    assert tags["dailymix.training_rows"] == str(len(frame)) and tags["dailymix.feature_version"]

    # The run holds every metric and artifact a reviewer looks for, read back through the client.
    run = client.get_run(worse["run_id"])
    for metric in ("holdout_auc", "holdout_log_loss", "holdout_ndcg_at_10", "ope_ips", "ope_snips", "ope_dr",
                   "ope_snips_low", "ope_snips_high", "champion_ope_snips"):
        assert np.isfinite(run.data.metrics[metric]), metric
    assert run.data.params["use_ips"] == "True" and run.data.params["propensity_clip"] == "20.0"
    artifacts = {a.path for a in client.list_artifacts(worse["run_id"])}
    nested = {a.path for folder in ("plots", "ope", SUITES_DIR) for a in client.list_artifacts(worse["run_id"], folder)}
    assert "embeddings" in artifacts  # the model itself is an MLflow 3 LoggedModel, checked below
    assert {IMPORTANCE_PLOT, CALIBRATION_PLOT, OPE_ARTIFACT, f"{SUITES_DIR}/users.json"} <= nested
    ope = mlflow.artifacts.load_dict(f"runs:/{worse['run_id']}/{OPE_ARTIFACT}")
    assert ope["events"] == N_USERS * EXPLORE and set(ope["estimates"]) == {"ips", "snips", "dr"}
    info = mlflow.models.get_model_info(f"models:/{settings.model_name}/{worse['version']}")
    assert info.signature is not None and info.saved_input_example_info is not None


def test_rollback_moves_the_alias_and_refuses_an_unknown_version(world) -> None:
    settings, _, _ = world
    current = registry.champion(settings)
    assert current is not None
    assert registry.rollback(settings, "1") == current.version
    assert registry.champion(settings).version == "1"
    with pytest.raises(LookupError, match="no version 99"):
        registry.rollback(settings, "99")
    registry.rollback(settings, current.version)


def test_too_few_exploration_events_fall_back_to_auc_and_say_so(world, tmp_path: Path) -> None:
    settings, frame, embeddings = world
    strict = settings.model_copy(update={"promotion": PromotionConfig(min_exploration_events=10**6,
                                                                      bootstrap_samples=100)})
    champion_before = registry.champion(strict)
    assert champion_before is not None  # left by the tests above
    candidate = train_and_register(strict, DAYS[-1], _directory(tmp_path, "v4", frame, embeddings, True,
                                                                np.random.default_rng(9)))
    assert "ope_snips" not in candidate["metrics"]  # no estimate from a handful of events
    decision = promote_if_better(strict, str(tmp_path / "v4"), candidate)
    assert f"only {N_USERS * EXPLORE} held-out exploration events (< 1000000)" in decision["reason"]
    assert "gated on holdout AUC" in decision["reason"]
    assert decision["promoted"] == (candidate["metrics"]["holdout_auc"] >= decision["champion_holdout_auc"])
    assert not decision["promoted"]  # shuffled labels: its AUC is near 0.5, the champion's is not
