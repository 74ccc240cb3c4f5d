"""Settings: where state lives and the knobs of each stage.

Every field has a default that runs on one laptop; environment variables override the
data root (`DAILYMIX_HOME`), the MLflow tracking URI (`MLFLOW_TRACKING_URI`) and the backends
a scaled-out deployment chooses (`ENV_OVERRIDES`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
    min_discovery_share: float = Field(0.2, ge=0, le=1, description="Least share of never-played tracks, held by "
                                       "the exploitation slots alone (exploration slots add discoveries on top).")
    max_discovery_share: float = Field(
        0.5, ge=0, le=1, description="Most never-played tracks in the exploitation slots (as a share of the mix) while "
        "familiar candidates last: a Daily Mix is mostly favourites. Exploration slots come on top.")
    max_tracks_per_artist: int = Field(2, ge=1, description="Most tracks of one artist in a mix.")
    exploration_rate: float = Field(
        0.05, ge=0, le=1, description="Share of slots filled by exploration (epsilon), half a slot rounding up: "
        "0.05 is 2 of 30. The default is `dailymix tune-exploration`'s long-run pick on the default simulated world.")
    explore_genres: int = Field(
        2, ge=1, description="Genres exploration draws from (more if they hold too few artists): of the genres "
        "holding less than explore_below_share of the user's plays, those the user plays most, then those nearest "
        "the user's genres in the item embedding.")
    explore_below_share: float = Field(
        0.16, ge=0, le=1, description="Genres under this share of the user's completed plays are explored: a taste "
        "genre near min_cluster_share (whose mix the user may soon stop hearing) and genres without a mix. At least "
        "min_cluster_share.")
    min_cluster_share: float = Field(
        0.08, ge=0, le=1, description="A taste cluster needs this share of recent plays to become a mix."
    )

    @model_validator(mode="after")
    def _explores_every_genre_without_a_mix(self) -> RerankConfig:
        if self.explore_below_share < self.min_cluster_share:
            raise ValueError(f"explore_below_share ({self.explore_below_share}) must be at least min_cluster_share "
                             f"({self.min_cluster_share}): a genre without a mix must stay explorable")
        return self


class RetrievalConfig(_Config):
    """Embeddings and the ANN index."""

    factors: int = Field(32, ge=2, description="ALS embedding dimension.")
    als_iterations: int = Field(15, ge=1, description="ALS sweeps.")
    als_regularization: float = Field(0.05, ge=0, description="ALS L2 penalty.")
    backend: Literal["annoy", "voyager", "faiss"] = Field(
        "annoy", description="ANN backend: 'annoy' (memory-mapped, shared by all workers on a node), 'voyager' "
        "(HNSW, loaded per process) or 'faiss' (inverted file, batched queries, memory-mapped).")
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
    faiss_nlist: int = Field(0, ge=0, description="faiss inverted-file cells (0: about 4 * sqrt(tracks)).")
    faiss_nprobe: int = Field(8, ge=1, description="faiss cells scanned per query at the first try (doubled while "
                              "under target_recall).")
    faiss_max_nprobe: int = Field(512, ge=1, description="Most cells faiss may scan per query.")
    candidates_per_cluster: int = Field(1000, ge=1, description="ANN neighbours fetched per taste cluster.")
    genre_candidates: int = Field(
        50, ge=0, description="Per taste cluster, besides its ANN neighbours: this many of the cluster genre's most "
        "played tracks the user has never played, and every track of the genre the user played through in the taste "
        "window. Where the embedding places a small genre inside a bigger one, its mix can still be that genre.")
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
    use_ips: bool = Field(
        True, description="Weight mix-driven rows by clipped, self-normalised 1/propensity; False trains unweighted "
        "(kept for comparison).")
    importance_rows: int = Field(
        3000, ge=0, description="Holdout rows of the permutation-importance plot logged with each model; 0 logs no "
        "importance plot (the closed-loop simulation, where it is a fifth of a week's retrain).")


class PromotionConfig(_Config):
    """Off-policy evaluation of champion and challenger, and the gate between them."""

    snips_tolerance: float = Field(
        0.005, ge=0, le=1, description="The challenger becomes champion unless its SNIPS completion estimate is "
        "below the champion's by more than this (absolute).")
    target_temperature: float = Field(
        1.0, gt=0, description="Temperature of the evaluated policy: exploration tilted by exp(logit(score) / T) "
        "(small: near-greedy among the explored tracks, large: the exploration policy itself).")
    bootstrap_samples: int = Field(500, ge=10, description="Bootstrap resamples for the OPE confidence intervals.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Level of the bootstrap confidence intervals.")
    min_exploration_events: int = Field(
        200, ge=1, description="Fewer held-out exploration events than this: no OPE, the gate falls back to AUC.")


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
    access_log: bool = Field(
        False, description="One uvicorn log line per request (errors and 5xx are logged either way). Off by default: "
        "at hundreds of requests/s the line costs ~0.08 ms of the server's single event loop per request, close to "
        "half of what uvicorn and FastAPI themselves cost.")


class FeatureStoreConfig(_Config):
    """Where Feast keeps online features. Choosing the store is configuration, not code: set
    `DAILYMIX_ONLINE_STORE=redis` and `DAILYMIX_REDIS_URL` (or settings.json) and nothing else changes."""

    online_store: Literal["sqlite", "redis"] = Field(
        "sqlite", description="Online store: 'sqlite' (one file under home; one machine) or 'redis' (shared by "
        "every API process and worker of a scaled-out deployment). Env: DAILYMIX_ONLINE_STORE.")
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", pattern=r"^rediss?://",
        description="Redis to use when online_store='redis': redis[s]://[:password@]host:port/db. Env: "
        "DAILYMIX_REDIS_URL.")
    redis_key_ttl_seconds: int | None = Field(
        None, ge=1, description="Optional Redis expiry of a whole entity key (all its views) not written for this "
        "long; bounds memory. Per-feature TTLs (e.g. 24 h of the last-10) are enforced at read either way.")

    @property
    def redis_connection_string(self) -> str:
        """`redis_url` in Feast's form: host:port,db=N[,password=...][,ssl=true]."""
        from urllib.parse import unquote, urlsplit

        url = urlsplit(self.redis_url)
        parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}", f"db={int(url.path.strip('/') or 0)}"]
        if url.password:
            parts.append(f"password={unquote(url.password)}")
        if url.scheme == "rediss":
            parts.append("ssl=true")
        return ",".join(parts)


class UiConfig(_Config):
    """Links of the Daily Mix page in the Airflow UI (`plugins/dailymix_plugin.py`)."""

    mlflow_url: str = Field("http://localhost:5000", description="MLflow UI base URL the page links model versions "
                            "to (`make up` serves it here).")
    airflow_url: str = Field("", description="Airflow UI base URL the page links runs to; empty: the page's own "
                             "origin (it is served by the Airflow API server).")


class ScaleOutConfig(_Config):
    """Backends and sizes of the scaled-out deployment. Every empty value keeps the embedded default, so scaling
    out is configuration: the same code chooses a backend from these fields (env overrides in `load_settings`)."""

    publish_database_url: str = Field(
        "", description="SQLAlchemy URL of the Postgres database that holds published mixes (e.g. "
        "'postgresql+psycopg2://user@host:5432/dailymix'); empty: content-addressed Parquet files under "
        "home/published. Env: DAILYMIX_PUBLISH_DB_URL.")
    publish_batch_rows: int = Field(
        50_000, ge=1, description="Rows per COPY batch when publishing to Postgres (all batches in one transaction).")
    mlflow_artifact_root: str = Field(
        "", description="Where a new MLflow experiment stores models: any URI MLflow writes to, e.g. "
        "'s3://bucket/mlflow' or 'mlflow-artifacts:/' (proxied by the tracking server, so workers need no "
        "object-store credentials); every worker must reach it. Empty: home/mlruns/artifacts. "
        "Env: DAILYMIX_MLFLOW_ARTIFACT_ROOT.")
    worker_concurrency: int = Field(
        2, ge=1, le=256, description="Task slots per Celery worker (Airflow [celery] worker_concurrency); one nightly "
        "shard runs per slot, so size it to the worker's cores. Exported to Airflow by "
        "`pipeline.ops.airflow_env.airflow_env`.")


class BenchConfig(_Config):
    """`dailymix bench`: the synthetic world and the measurements of the nightly throughput benchmark."""

    tracks: int = Field(1_000_000, ge=100, description="Catalog size of the synthetic world.")
    users: int = Field(20_000, ge=1, description="Users measured through the shard code (a second pass runs U/4).")
    dim: int = Field(64, ge=2, description="Embedding dimension.")
    backend: Literal["annoy", "voyager", "faiss"] = Field("annoy", description="ANN backend the shard path uses.")
    seed: int = Field(7, description="Seed of the world, the ranker and the indexes.")
    candidates: int = Field(1000, ge=1, description="k of recall@k and of the retrieval comparison.")
    plays_per_user: float = Field(120.0, gt=0, description="Mean history length (completed + skipped) per user.")
    train_rows: int = Field(60_000, ge=100, description="Synthetic rows the production-shaped ranker is trained on.")
    compare_users: int = Field(100, ge=1, description="Users whose taste-cluster queries the backends compare on.")
    compare_backends: bool = Field(True, description="Also build the other ANN backend for the comparison.")
    compile_ranker: bool = Field(True, description="Score with the ranker compiled to native code, as production "
                                 "shards of at least shard.compile_ranker_min_users users do (false: scikit-learn).")
    growth_users: int = Field(1000, ge=1, description="Users measured at tracks/10 for the catalog growth exponent.")
    annoy_trees: int = Field(32, ge=1, description="Annoy trees (32, search_k = trees × k: recall@1000 ≥ 0.95 at 1M).")
    annoy_search_k: int = Field(-1, ge=-1, description="Annoy search_k (-1: trees × k).")
    voyager_m: int = Field(16, ge=2, description="Voyager graph degree.")
    voyager_ef_construction: int = Field(100, ge=1, description="Voyager build-time depth.")
    voyager_ef: int = Field(1000, ge=1, description="Voyager query depth.")
    faiss_nlist: int = Field(0, ge=0, description="faiss inverted-file cells (0: about 4 * sqrt(tracks)).")
    faiss_nprobe: int = Field(32, ge=1, description="faiss cells scanned per query.")
    cache: str = Field("", description="Directory to keep built indexes between runs (default: under the home).")
    single_scores: int = Field(500, ge=1, description="Candidates scored one call each vs one batched call.")


class ShardConfig(_Config):
    """How a nightly shard works through its users (throughput and memory: docs/benchmarks.md)."""

    block_users: int = Field(
        256, ge=1, description="Users scored together: one feature build and one ranker call per block, and the "
        "unit the shard file is streamed in (memory stays flat in the shard's size).")
    rank_per_cluster: int = Field(
        300, ge=1, description="Cheap first pass: never-played candidates per taste cluster that reach the ranker, "
        "best retrieval score first (tracks the user has played always do). At least candidates_per_cluster "
        "turns it off.")
    compile_ranker_min_users: int = Field(
        5000, ge=0, description="Shards with at least this many users score with the ranker compiled to native code "
        "(Treelite/TL2cgen: the same probabilities, ~3x faster; tens of seconds to compile, once per model and node, "
        "cached under the data root). Smaller shards use scikit-learn directly. 0 = always compile.")


class MonitorConfig(_Config):
    """Drift rules of the monitor DAG: each day's health row against its trailing weekly baseline."""

    baseline_weeks: int = Field(4, ge=1, description="Baseline = median of the values on the same weekday this many "
                                "previous weeks (D-7, D-14, ...).")
    min_baseline_weeks: int = Field(1, ge=1, description="Fewer stored weekly values than this: no drift verdict.")
    long_baseline_weeks: int = Field(
        8, ge=0, description="Second, slower baseline for the entropies: the median of the same weekday's values "
        "from baseline_weeks + 1 to this many weeks back (those that exist). A narrowing of ~2% a week never falls "
        "10% below the trailing 4-week median, which follows it down; it does fall below this one. 0 turns it off.")
    entropy_drop: float = Field(0.10, gt=0, le=1, description="Alert when a genre entropy falls more than this share "
                                "below its baseline.")
    skip_rise: float = Field(0.03, gt=0, le=1, description="Alert when the skip rate rises more than this many "
                             "points (as a fraction: 0.03 = 3 pp) above its baseline.")
    entropy_metrics: tuple[str, ...] = Field(
        ("global_genre_entropy", "user_genre_entropy"), min_length=1, description="Entropies the drift rule "
        "watches: what everyone is served (global) and each user's diet across their mixes (user). Per-mix entropy is "
        "left out by default: mixes are genre clusters by design.")
    mlflow_experiment: str = Field("dailymix-monitor", description="MLflow experiment the daily health rows go to.")

    @model_validator(mode="after")
    def _long_baseline_is_older(self) -> MonitorConfig:
        if 0 < self.long_baseline_weeks <= self.baseline_weeks:
            raise ValueError(f"long_baseline_weeks ({self.long_baseline_weeks}) must be 0 (off) or more than "
                             f"baseline_weeks ({self.baseline_weeks})")
        return self


class ListenerConfig(_Config):
    """How simulated listeners play published mixes (`pipeline.sim.listeners`); base skip odds come from the world."""

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
    mix_preference: float = Field(
        2.0, ge=0, description="Attention is scarce: a session plays mix m with probability proportional to "
        "exp(this × m's mean expressed affinity over its first `session_tracks` slots), the multinomial logit choice "
        "of RecSim's interest-evolution users (Ie et al. 2019). 2 keeps the odds of the earlier power-law choice at "
        "typical likings (0.95 against 0.15: 5 to 1). 0 = every mix equally often.")
    organic_share: float = Field(
        0.3, ge=0, le=1, description="Share of each day's starts the listener chooses alone (organic, no mix id): "
        "genres in proportion to expressed taste, tracks by popularity. Anderson et al., WWW 2020, split Spotify "
        "listening into organic and programmed; 0.3 is a starting point in that spirit, not a measured share.")
    latent_like_prob: float = Field(
        0.2, ge=0, le=1, description="Chance that a genre outside the listener's tastes is latent-liked (affinity "
        "~U(0.5, 0.9), else ~U(0, 0.2)) and absent from their history: every user likes every genre somewhat, as "
        "RecSim's interest-evolution users have an interest in every topic and Chaney et al. (RecSys 2018) users a "
        "preference for every item. 0.2 is a starting point, not fitted.")
    unfamiliar_familiarity: float = Field(
        0.3, ge=0, le=1, description="Familiarity (φ) of a genre outside the taste genres, and the level it fades "
        "to: expressed affinity = latent affinity × familiarity, the mere-exposure effect of Curmei et al. "
        "(RecSys 2022). Taste genres start at 1.")
    familiarity_gain: float = Field(
        0.1, ge=0, le=1, description="Each completed play of a genre moves its familiarity this share of the way to "
        "1 (f ← f + gain (1 − f)); the step size of RecSim's interest evolution (0.1) and Curmei et al.'s "
        "mere-exposure update.")
    familiarity_decay: float = Field(
        0.1, ge=0, le=1, description="Each simulated week without a completed play of a genre moves its familiarity "
        "this share of the way back to `unfamiliar_familiarity` (λ): exposure effects fade without exposure "
        "(Curmei et al., RecSys 2022). 0.1 is a starting point.")
    habit_rate: float = Field(
        0.1, ge=0, le=1, description="Each simulated week a listener's genre weights move this share of the way "
        "(β, zero-sum) toward the shares of what they completed that week: preferences drift toward what is "
        "consumed, as in Jiang et al., AIES 2019, and RecSim's interest evolution (step 0.1).")
    satiation_per_play: float = Field(
        0.0, ge=0, le=1, description="Skip probability added per earlier start of the same genre that day (at most "
        "`fatigue_cap`): satiation. Off by default: no published rate for a daily music session to start from.")


class Settings(_Config):
    """All settings of one Daily Mix installation."""

    home: Path = Field(description="Data root: every file the platform writes lives under it.")
    seed: int = Field(7, description="Seed of every stochastic stage (clusters, exploration, ALS).")
    n_shards: int = Field(4, ge=1, description="Nightly scoring shards.")
    max_bad_row_share: float = Field(0.01, ge=0, le=1, description="Ingest fails above this quarantined share.")
    mlflow_tracking_uri: str = Field("", description="MLflow tracking URI; default: SQLite under home.")
    model_name: str = Field("dailymix-ranker", description="Registered model name in MLflow.")
    experiment_name: str = Field("dailymix-ranker", description="MLflow experiment.")
    world: WorldConfig = WorldConfig()
    rerank: RerankConfig = RerankConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    training: TrainingConfig = TrainingConfig()
    promotion: PromotionConfig = PromotionConfig()
    skew: SkewConfig = SkewConfig()
    api: ApiConfig = ApiConfig()
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    ui: UiConfig = UiConfig()
    scale_out: ScaleOutConfig = ScaleOutConfig()
    shard: ShardConfig = ShardConfig()
    monitor: MonitorConfig = MonitorConfig()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlruns' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.scale_out.mlflow_artifact_root or str(self.home / "mlruns" / "artifacts")


def default_home() -> Path:
    return Path(os.environ.get("DAILYMIX_HOME") or PROJECT_ROOT / ".dailymix").resolve()


# Environment variables that override one setting each: the backends a deployment chooses without a code change.
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "DAILYMIX_ONLINE_STORE": ("feature_store", "online_store"),
    "DAILYMIX_REDIS_URL": ("feature_store", "redis_url"),
    "DAILYMIX_PUBLISH_DB_URL": ("scale_out", "publish_database_url"),
    "DAILYMIX_MLFLOW_ARTIFACT_ROOT": ("scale_out", "mlflow_artifact_root"),
}


def load_settings(home: Path | str | None = None) -> Settings:
    """Settings for a data root: `home/settings.json` if present, else defaults."""
    root = Path(home).resolve() if home else default_home()
    saved = root / "settings.json"
    if saved.exists():
        try:
            settings = Settings.model_validate({**json.loads(saved.read_text()), "home": root})
        except ValidationError as error:
            raise invalid_settings(error) from None
    else:
        settings = Settings(home=root)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        settings = settings.model_copy(update={"mlflow_tracking_uri": os.environ["MLFLOW_TRACKING_URI"]})
    return with_env_overrides(settings)


def with_env_overrides(settings: Settings) -> Settings:
    """Apply the `ENV_OVERRIDES` that are set over the saved settings, validated like any setting."""
    for env, (section, field) in ENV_OVERRIDES.items():
        if os.environ.get(env):
            settings = _with_field(settings, section, field, os.environ[env])
    return settings


def _with_field(settings: Settings, section: str, field: str, value: object) -> Settings:
    """`settings` with one field of one section replaced, validated like any setting."""
    current = getattr(settings, section)
    try:
        updated = type(current).model_validate({**current.model_dump(), field: value})
    except ValidationError as error:
        raise invalid_settings(error, section) from None
    return settings.model_copy(update={section: updated})


def invalid_settings(error: ValidationError, where: str = "") -> ValidationError:
    """The same error naming each setting and what is wrong with it, but never the value given: a value may hold a
    password (pydantic's own message quotes it)."""
    prefix = (where,) if where else ()
    return ValidationError.from_exception_data(error.title, [
        {"type": e["type"], "loc": prefix + tuple(e["loc"]), "input": "<not shown>", **({"ctx": e["ctx"]} if "ctx" in e
                                                                                         else {})}
        for e in error.errors(include_url=False)])


# Settings holding connection URLs: their passwords belong in the environment (`ENV_OVERRIDES`) or an Airflow
# connection, never in settings.json or printed output. `redacted` masks a password in every text setting, not only
# these: any of them may be given a URL with credentials (an artifact store, a UI link).
URL_SETTINGS: tuple[tuple[str, str], ...] = (("feature_store", "redis_url"), ("scale_out", "publish_database_url"))
PASSWORD_MASK = "***"
# Query parameters that carry a credential in a connection URL (libpq's ?password=, Redis' ?password=, tokens).
SECRET_PARAMETERS = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|secret|token|api_key|apikey|key|"
                               r"sslpassword|access_key|secret_key)=)[^&;#]*")


def without_password(url: str, mask: str = "") -> str:
    """`url` with the password of its user info removed, or replaced by `mask`, and the values of credential query
    parameters (`SECRET_PARAMETERS`) replaced by `mask` (or PASSWORD_MASK when removing); other text unchanged.

    The user info runs to the last "@" before the host, even when an unencoded password holds "/", "?" or "#" (a
    client may still read it so): masking too much is harmless, printing a password is not."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo and "/" not in userinfo.split(":", 1)[0]:
        kept = userinfo.split(":", 1)[0] + (f":{mask}" if mask else "")
        rest = f"{kept}{'@' if kept else ''}{host}"
    return f"{scheme}://" + SECRET_PARAMETERS.sub(lambda m: m.group(1) + (mask or PASSWORD_MASK), rest)


def redacted(settings: Settings, mask: str = PASSWORD_MASK) -> Settings:
    """The settings with every password in a text setting (`without_password`: the connection URLs, the MLflow
    tracking URI, and any other) replaced by `mask` ("" removes it)."""
    for section, model in settings:
        if isinstance(model, BaseModel):
            for field, value in model:
                if isinstance(value, str) and without_password(value, mask) != value:
                    settings = _with_field(settings, section, field, without_password(value, mask))
    return settings.model_copy(update={"mlflow_tracking_uri": without_password(settings.mlflow_tracking_uri, mask)})


def save_settings(settings: Settings) -> Path:
    """Write `home/settings.json`, without any password (`redacted`)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / "settings.json"
    path.write_text(redacted(settings, mask="").model_dump_json(indent=2, exclude={"home"}))
    return path
