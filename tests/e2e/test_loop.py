"""The whole loop on a tiny world, every DAG run with `airflow dags test`, checked against the rules."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.paths import Layout
from pipeline.data.events import read_raw_events
from pipeline.ops.airflow_env import DagRun, airflow_env, run_dag, run_dags
from pipeline.publish.files import MANIFEST, date_dir, read_publication
from pipeline.reranking.rules import rule_violations
from pipeline.sim.world import history_days

pytestmark = pytest.mark.e2e

@pytest.fixture(scope="module")
def loop(tiny_world: Settings) -> Settings:
    return tiny_world


@pytest.fixture(scope="module")
def day(tiny_world: Settings) -> str:
    return history_days(tiny_world.world)[-1]


def test_every_published_mix_obeys_every_rule(loop: Settings, day: str) -> None:
    manifest, slots = read_publication(loop, day)
    assert manifest["users"] == slots[s.USER_ID].nunique() > 0
    assert rule_violations(slots, loop.rerank) == []
    per_user = slots.groupby(s.USER_ID)[s.MIX_INDEX].nunique()
    assert per_user.between(1, loop.rerank.max_mixes).all()
    assert (slots.groupby([s.USER_ID, s.MIX_INDEX]).size() == loop.rerank.tracks_per_mix).all()


def test_discovery_flags_match_the_listening_history(loop: Settings, day: str) -> None:
    _, slots = read_publication(loop, day)
    history = read_raw_events(Layout(loop.home), history_days(loop.world))
    heard = set(zip(history[s.USER_ID], history[s.TRACK_ID], strict=True))
    played_before = [(u, t) in heard for u, t in zip(slots[s.USER_ID], slots[s.TRACK_ID], strict=True)]
    assert (~slots[s.DISCOVERY].to_numpy() == pd.Series(played_before).to_numpy()).all()
    explore = slots.loc[slots[s.POLICY] == s.POLICY_EXPLORE]
    assert explore[s.DISCOVERY].all() and (explore[s.PROPENSITY] < 1).all()


def test_mixes_cli_json_contract(loop: Settings, day: str) -> None:
    _, slots = read_publication(loop, day)
    user = int(slots[s.USER_ID].iloc[0])
    out = subprocess.run([sys.executable, "-m", "pipeline.ops.cli", "--home", str(loop.home), "mixes", str(user),
                          "--json"], capture_output=True, text=True, check=True).stdout
    payload = json.loads(out)
    assert payload["user_id"] == user and payload["date"] == day
    assert len(payload["mixes"]) == slots.loc[slots[s.USER_ID] == user, s.MIX_INDEX].nunique()
    mix = payload["mixes"][0]
    assert set(mix) == {"mix_id", "title", "lineage", "tracks"}
    assert set(mix["lineage"]) == {"model_version", "index_version", "feature_version", "run_id"}
    assert all(mix["lineage"].values())
    track = mix["tracks"][0]
    assert set(track) == {"track_id", "artist_id", "genre", "mood", "discovery", "policy", "propensity", "position"}
    assert isinstance(track["discovery"], bool) and isinstance(track["propensity"], float)
    assert [t["position"] for t in mix["tracks"]] == list(range(len(mix["tracks"])))


def test_champion_is_registered_and_learned_the_skip_signal(loop: Settings, day: str) -> None:
    from pipeline.core.registry import champion, client

    ref = champion(loop)
    assert ref is not None
    manifest, _ = read_publication(loop, day)
    assert manifest["lineage"]["model_version"] == ref.version
    run = client(loop).get_run(ref.run_id)
    # The world's skips depend on true affinity; a ranker that learned nothing would sit at 0.5.
    assert run.data.metrics["holdout_auc"] > 0.6
    assert client(loop).get_registered_model(loop.model_name).aliases == {"champion": int(ref.version)}


def test_retrain_run_has_its_metrics_artifacts_and_lineage_in_mlflow(loop: Settings, day: str) -> None:
    """`airflow dags test dailymix_retrain` logged what a reviewer opens, read back through the MLflow client."""
    import mlflow

    from pipeline.core.registry import champion, client
    from pipeline.features.skew import SUITES_DIR
    from pipeline.train.retrain import CALIBRATION_PLOT, CHAMPION_TAG, IMPORTANCE_PLOT, OPE_ARTIFACT, REASON_TAG

    ref = champion(loop)
    mlflow_client = client(loop)
    run = mlflow_client.get_run(ref.run_id)
    assert mlflow_client.get_experiment(run.info.experiment_id).name == "dailymix-ranker"
    for metric in ("holdout_auc", "holdout_log_loss", "holdout_ndcg_at_10", "train_rows", "ope_exploration_events"):
        assert metric in run.data.metrics, metric
    assert 0 < run.data.metrics["holdout_ndcg_at_10"] <= 1
    assert run.data.params["use_ips"] == "True" and run.data.params["promotion_snips_tolerance"] == "0.005"
    paths = {a.path for folder in ("plots", "ope", SUITES_DIR)
             for a in mlflow_client.list_artifacts(ref.run_id, folder)}
    assert {IMPORTANCE_PLOT, CALIBRATION_PLOT, OPE_ARTIFACT} <= paths
    assert any(p.startswith(f"{SUITES_DIR}/") for p in paths)
    # The tiny world has no mix feedback yet (organic history only): OPE reports 0 events rather than guessing.
    ope = mlflow.artifacts.load_dict(f"runs:/{ref.run_id}/{OPE_ARTIFACT}")
    assert ope["events"] == run.data.metrics["ope_exploration_events"] == 0 and ope["estimates"] == {}
    version = mlflow_client.get_model_version(loop.model_name, ref.version)
    assert version.tags[CHAMPION_TAG] == "promoted" and version.tags[REASON_TAG] == "no champion yet"
    days = history_days(loop.world)
    assert version.tags["dailymix.training_end"] == day and version.tags["dailymix.training_start"] == days[0]
    assert int(version.tags["dailymix.training_rows"]) == run.data.metrics["train_rows"] + run.data.metrics[
        "holdout_rows"]
    manifest, _ = read_publication(loop, day)
    assert version.tags["dailymix.feature_version"] == manifest["lineage"]["feature_version"]
    info = mlflow.models.get_model_info(ref.uri)
    assert info.signature is not None and info.saved_input_example_info is not None

    shown = subprocess.run([sys.executable, "-m", "pipeline.ops.cli", "--home", str(loop.home), "mixes",
                            str(manifest_user(loop, day))], capture_output=True, text=True, check=True).stdout
    assert f"model {loop.model_name} v{ref.version}" in shown.splitlines()[0]


def manifest_user(loop: Settings, day: str) -> int:
    _, slots = read_publication(loop, day)
    return int(slots[s.USER_ID].iloc[0])


def test_index_recall_was_measured_and_recorded(loop: Settings) -> None:
    from pipeline.candidates.index import index_for_model
    from pipeline.core.registry import champion

    record = index_for_model(loop, champion(loop).version)
    assert record["recall_at_1000"] >= 0.9
    assert record["items"] > 0


def test_monitor_recorded_the_day(loop: Settings, day: str) -> None:
    metrics = json.loads((Layout(loop.home).monitoring / "metrics" / f"date={day}.json").read_text())
    assert metrics["users"] > 0 and metrics["tracks_per_mix"] == loop.rerank.tracks_per_mix
    assert metrics["discovery_share"] >= loop.rerank.min_discovery_share
    assert 0 < metrics["mean_mix_genre_entropy"] <= metrics["global_genre_entropy"] + 1e-9
    assert (Layout(loop.home).monitoring / "alerts" / f"date={day}" / "monitor.json").exists()


def test_rerunning_the_nightly_dag_leaves_identical_mixes(loop: Settings, day: str) -> None:
    directory = date_dir(loop, day)
    before = json.loads((directory / MANIFEST).read_text())
    digest_before = hashlib.sha256((directory / before["mixes_file"]).read_bytes()).hexdigest()
    run_dag(loop.home, "dailymix_nightly", day)
    after = json.loads((directory / MANIFEST).read_text())
    assert after["mixes_file"] == before["mixes_file"]
    assert hashlib.sha256((directory / after["mixes_file"]).read_bytes()).hexdigest() == digest_before
    assert sorted(p.name for p in directory.glob("mixes-*.parquet")) == [before["mixes_file"]]
    assert {k: v for k, v in after["lineage"].items() if k != "run_id"} == {
        k: v for k, v in before["lineage"].items() if k != "run_id"
    }
    assert after["lineage"]["run_id"] != before["lineage"]["run_id"]  # lineage names the run that wrote it


def test_malformed_events_file_is_rejected_by_the_cli_with_nothing_lost(loop: Settings, day: str,
                                                                         tmp_path: Path) -> None:
    rows = pd.read_parquet(Layout(loop.home).landing(day)).head(50)
    rows[s.USER_ID] += 100_000  # new listeners: no row duplicates what the raw store already holds
    rows = rows.astype(object)
    rows.loc[3, s.TRACK_ID] = 999_999  # unknown track
    rows.loc[7, s.MS_PLAYED] = -5  # negative duration
    rows.loc[9, s.USER_ID] = None  # missing id
    bad = tmp_path / "bad-events.csv"
    rows.to_csv(bad, index=False)
    result = subprocess.run([sys.executable, "-m", "pipeline.ops.cli", "--home", str(loop.home), "ingest", str(bad),
                             "--date", day], capture_output=True, text=True, env=airflow_env(loop.home))
    assert result.returncode == 1
    assert "bad-events.csv" in result.stderr and "3 of 50 rows" in result.stderr
    (quarantine_part,) = Layout(loop.home).quarantine(day).glob("bad-events-*.parquet")
    quarantined = pd.read_parquet(quarantine_part)
    assert sorted(quarantined[s.SOURCE_ROW].astype(int)) == [4, 8, 10]
    assert not list(Layout(loop.home).raw_events(day).glob("bad-events-*.parquet"))


def test_a_unit_bug_upstream_is_stopped_by_the_skew_gate(loop: Settings, day: str) -> None:
    """ms_played arrives in seconds the next day: ingest accepts it (the values are plausible), the gate does not."""
    next_day = (pd.Timestamp(day) + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    events = pd.read_parquet(Layout(loop.home).landing(day))
    events[s.TS] = events[s.TS] + pd.Timedelta(days=1)
    events[s.MS_PLAYED] = events[s.MS_PLAYED] // 1000
    landing = Layout(loop.home).landing(next_day)  # where the upstream producer delivers
    landing.parent.mkdir(parents=True, exist_ok=True)
    events.to_parquet(landing, index=False)
    env = airflow_env(loop.home)

    def dailymix(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.ops.cli", "--home", str(loop.home), *args],
                              capture_output=True, text=True, env=env)

    ingest = dailymix("ingest", str(landing), "--date", next_day)
    assert ingest.returncode == 0, ingest.stderr  # plausible values: row rules cannot tell seconds from ms

    latest_before = json.loads((Layout(loop.home).published / "latest.json").read_text())
    with pytest.raises(RuntimeError, match="skew gate failed"):  # features re-ingest the same file (idempotent)
        run_dags(loop.home, [DagRun("dailymix_features", next_day), DagRun("dailymix_nightly", next_day)])
    assert not (date_dir(loop, next_day) / MANIFEST).exists()
    assert json.loads((Layout(loop.home).published / "latest.json").read_text()) == latest_before

    validate = dailymix("validate", "--date", next_day)  # what an operator runs to see why
    assert validate.returncode == 1
    assert "users.completion" in validate.stderr
    alerts = json.loads((Layout(loop.home).monitoring / "alerts" / f"date={next_day}" / "skew_gate.json").read_text())
    assert any("users.completion" in alert for alert in alerts["alerts"])
