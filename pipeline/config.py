"""Settings: where state lives and the knobs of each stage.

Every field has a default that runs on one laptop; environment variables override the
data root (`DAILYMIX_HOME`) and the MLflow tracking URI (`MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldConfig(_Config):
    """Size and shape of a synthetic world."""

    seed: int = Field(7, description="Seed for every random draw of the generator.")
    n_users: int = Field(300, ge=1, description="Number of listeners.")
    n_tracks: int = Field(5000, ge=10, description="Catalog size.")
    n_artists: int = Field(500, ge=1, description="Artists; each track has exactly one.")
    n_genres: int = Field(12, ge=2, le=24, description="Genres drawn from a fixed vocabulary.")
    n_moods: int = Field(6, ge=1, le=8, description="Moods drawn from a fixed vocabulary.")
    history_days: int = Field(10, ge=1, description="Days of organic history before start_date.")
    start_date: str = Field("2026-11-01", description="First day the platform publishes mixes (ISO).")
    plays_per_day: float = Field(20.0, gt=0, description="Mean track starts per user per day.")
    popularity_exponent: float = Field(1.1, gt=0, description="Zipf exponent of track popularity.")
    max_taste_components: int = Field(4, ge=1, description="Most (genre, mood) cells in a user's taste.")


class RerankConfig(_Config):
    """Rules every published mix obeys."""

    max_mixes: int = Field(6, ge=1, description="Most mixes per user; fewer for narrow tastes.")
    tracks_per_mix: int = Field(30, ge=1, description="Slots per mix.")
    min_discovery_share: float = Field(0.2, ge=0, le=1, description="Least share of never-played tracks.")
    max_discovery_share: float = Field(
        0.5, ge=0, le=1, description="Most share of never-played tracks while familiar candidates last: a Daily Mix "
        "is mostly favourites.")
    max_tracks_per_artist: int = Field(2, ge=1, description="Most tracks of one artist in a mix.")
    exploration_rate: float = Field(0.1, ge=0, le=1, description="Share of slots filled by exploration (epsilon).")
    min_cluster_share: float = Field(
        0.08, ge=0, le=1, description="A taste cluster needs this share of recent plays to become a mix."
    )


class RetrievalConfig(_Config):
    """Embeddings and the ANN index."""

    factors: int = Field(32, ge=2, description="ALS embedding dimension.")
    als_iterations: int = Field(15, ge=1, description="ALS sweeps.")
    als_regularization: float = Field(0.05, ge=0, description="ALS L2 penalty.")
    backend: Literal["annoy", "voyager"] = Field(
        "annoy", description="ANN backend: 'annoy' (memory-mapped, shared by all workers on a node) or 'voyager' "
        "(HNSW, loaded per process).")
    target_recall: float = Field(
        0.95, ge=0, le=1, description="recall@1000 vs exact search the index build aims for: Annoy trees are doubled "
        "(Voyager's query depth ef too) until the sample queries reach it, up to the caps below.")
    min_recall: float = Field(
        0.90, ge=0, le=1, description="The recall gate's floor: below it the build fails and the previous index "
        "keeps serving.")
    n_trees: int = Field(10, ge=1, description="Annoy trees of the first build (doubled while under target_recall).")
    max_trees: int = Field(320, ge=1, description="Most Annoy trees a build may use.")
    search_k: int = Field(-1, ge=-1, description="Annoy search_k; -1 means n_trees * k.")
    voyager_m: int = Field(16, ge=2, le=128, description="Voyager graph degree M (more: better recall, bigger).")
    voyager_ef_construction: int = Field(200, ge=1, description="Voyager build-time search depth.")
    voyager_max_ef: int = Field(8000, ge=1, description="Most query depth ef Voyager may use (it starts at k).")
    candidates_per_cluster: int = Field(1000, ge=1, description="ANN neighbours fetched per taste cluster.")
    recall_sample: int = Field(200, ge=1, description="Queries sampled to measure recall vs exact search.")
    recent_days: int = Field(28, ge=1, description="History window for taste clusters.")


class TrainingConfig(_Config):
    """Ranker training."""

    window_days: int = Field(28, ge=1, description="Days of events in the training set.")
    max_iter: int = Field(200, ge=1, description="Boosting iterations.")
    learning_rate: float = Field(0.1, gt=0, description="Boosting learning rate.")
    max_leaf_nodes: int = Field(31, ge=2, description="Leaves per tree.")
    propensity_clip: float = Field(20.0, ge=1, description="Cap on inverse-propensity weights.")
    holdout_days: int = Field(2, ge=0, description="Last days of the window held out for evaluation.")
    use_ips: bool = Field(True, description="Weight training rows by clipped inverse propensity; False trains "
                          "unweighted (the naive, feedback-loop-prone baseline).")


class SkewConfig(_Config):
    """The nightly training–serving skew gate."""

    z: float = Field(4.0, gt=0, description="Band half-width in units of the training data's own spread.")
    profile_days: int = Field(7, ge=1, description="Daily snapshots up to the training day that set the bands.")
    max_feature_age_hours: float = Field(
        24.0, gt=0, description="Serving features older than this at the end of the run's day fail the gate.")


class ApiConfig(_Config):
    """The serving API (`dailymix serve`): bounds that keep one client from exhausting the service."""

    max_body_bytes: int = Field(1_000_000, ge=1, description="Largest request body accepted; larger gets 413.")
    max_batch_rows: int = Field(1000, ge=1, description="Most events in one POST /v1/events batch; more gets 413.")


class MonitorConfig(_Config):
    """Drift rules of the monitor DAG: each day's health row against its trailing weekly baseline."""

    baseline_weeks: int = Field(4, ge=1, description="Baseline = median of the values on the same weekday this many "
                                "previous weeks (D-7, D-14, ...).")
    min_baseline_weeks: int = Field(1, ge=1, description="Fewer stored weekly values than this: no drift verdict.")
    entropy_drop: float = Field(0.10, gt=0, le=1, description="Alert when a genre entropy falls more than this share "
                                "below its baseline.")
    skip_rise: float = Field(0.03, gt=0, le=1, description="Alert when the skip rate rises more than this many "
                             "points (as a fraction: 0.03 = 3 pp) above its baseline.")
    entropy_metrics: tuple[str, ...] = Field(
        ("global_genre_entropy", "user_genre_entropy"), min_length=1, description="Entropies the drift rule "
        "watches: what everyone is served (global) and each user's diet across their mixes (user). Per-mix entropy is "
        "left out by default: mixes are genre clusters by design.")
    mlflow_experiment: str = Field("dailymix-monitor", description="MLflow experiment the daily health rows go to.")


class ListenerConfig(_Config):
    """How simulated listeners play published mixes (`pipeline.simulator`); the base skip odds come from the world."""

    session_tracks: float = Field(10.0, gt=0, description="Mean track starts of one listening session; a session "
                                  "plays one mix from its first position down.")
    position_penalty: float = Field(0.15, ge=0, le=1, description="Added skip probability at a mix's last position "
                                    "(linear from 0 at the first): attention fades down a mix.")
    familiarity_bonus: float = Field(0.10, ge=0, le=1, description="Skip probability removed for a track the listener "
                                     "already knows.")
    novelty_penalty: float = Field(0.05, ge=0, le=1, description="Skip probability added for a never-heard track.")
    fatigue_per_play: float = Field(0.03, ge=0, le=1, description="Skip probability added per start of the same "
                                    "track in the previous `fatigue_days` days.")
    fatigue_cap: float = Field(0.3, ge=0, le=1, description="Most skip probability fatigue can add.")
    fatigue_days: int = Field(7, ge=1, description="Days of a listener's own starts that cause fatigue.")


class Settings(_Config):
    """All settings of one Daily Mix installation."""

    home: Path = Field(description="Data root: every file the platform writes lives under it.")
    seed: int = Field(7, description="Seed of every stochastic stage (clusters, exploration, ALS).")
    n_shards: int = Field(4, ge=1, description="Nightly scoring shards.")
    max_bad_row_share: float = Field(0.01, ge=0, le=1, description="Ingest fails above this quarantined share.")
    mlflow_tracking_uri: str = Field("", description="MLflow tracking URI; default: SQLite under home.")
    model_name: str = Field("dailymix-ranker", description="Registered model name in MLflow.")
    experiment_name: str = Field("dailymix", description="MLflow experiment.")
    world: WorldConfig = WorldConfig()
    rerank: RerankConfig = RerankConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    training: TrainingConfig = TrainingConfig()
    skew: SkewConfig = SkewConfig()
    api: ApiConfig = ApiConfig()
    monitor: MonitorConfig = MonitorConfig()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlruns' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return str(self.home / "mlruns" / "artifacts")


def default_home() -> Path:
    return Path(os.environ.get("DAILYMIX_HOME") or PROJECT_ROOT / ".dailymix").resolve()


def load_settings(home: Path | str | None = None) -> Settings:
    """Settings for a data root: `home/settings.json` if present, else defaults."""
    root = Path(home).resolve() if home else default_home()
    saved = root / "settings.json"
    if saved.exists():
        settings = Settings.model_validate({**json.loads(saved.read_text()), "home": root})
    else:
        settings = Settings(home=root)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        settings = settings.model_copy(update={"mlflow_tracking_uri": os.environ["MLFLOW_TRACKING_URI"]})
    return settings


def save_settings(settings: Settings) -> Path:
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / "settings.json"
    path.write_text(settings.model_dump_json(indent=2, exclude={"home"}))
    return path
