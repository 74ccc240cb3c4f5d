"""The Feast feature repository: declarative definitions plus the infra settings of one data root.

Offline store: Parquet partitions under `features/offline/<view>/date=D/`, one per day, so a
rerun overwrites its day. Online store, chosen by `settings.feature_store`: SQLite
(`features/online.db`, the default) or Redis (shared by every process of a scaled-out
deployment). The definitions are code, applied by `feature_store`, so training and serving
share them exactly.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import timedelta
from pathlib import Path

import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.io import atomic_write_parquet

log = logging.getLogger(__name__)
os.environ.setdefault("FEAST_USAGE", "False")  # no telemetry from an embedded install

PROJECT = "dailymix"
USER_PROFILE = "user_profile"
TRACK_STATS = "track_stats"
USER_RECENT = "user_recent"
USER_RECENT_PUSH = "user_recent_push"  # the stream source of user_recent (the API writes the view's rows directly)
VIEWS = (USER_PROFILE, TRACK_STATS, USER_RECENT)
USER_FEATURES = ("genre_affinity", "mood_affinity", "plays", "skip_rate", "completion")
TRACK_FEATURES = ("plays", "skip_rate")


def offline_dir(settings: Settings, view: str) -> Path:
    return settings.home / "features" / "offline" / view


def definitions(settings: Settings) -> list:
    """Entities and feature views (imported lazily: Feast is heavy)."""
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Array, Float32, Int64

    # A listener; the join key of every user feature.
    user = Entity(name="user", join_keys=[s.USER_ID], value_type=ValueType.INT64)
    # A catalog track; the join key of every track feature.
    track = Entity(name="track", join_keys=[s.TRACK_ID], value_type=ValueType.INT64)

    def source(view: str) -> FileSource:
        path = offline_dir(settings, view)
        path.mkdir(parents=True, exist_ok=True)
        return FileSource(name=f"{view}_source", path=str(path), timestamp_field=s.EVENT_TIMESTAMP)

    # Taste and activity over the trailing window; one snapshot a day.
    profile = FeatureView(
        name=USER_PROFILE,
        entities=[user],
        ttl=timedelta(days=settings.training.window_days),
        schema=[
            Field(name="genre_affinity", dtype=Array(Float32), description="Share of completed plays per genre"),
            Field(name="mood_affinity", dtype=Array(Float32), description="Share of completed plays per mood"),
            Field(name="plays", dtype=Int64, description="Track starts in the window"),
            Field(name="skip_rate", dtype=Float32, description="Share of starts skipped"),
            Field(name="completion", dtype=Float32, description="Mean share of each started track heard"),
        ],
        source=source(USER_PROFILE),
    )
    # Popularity and skip rate per track, shrunk toward the global rate.
    stats = FeatureView(
        name=TRACK_STATS,
        entities=[track],
        ttl=timedelta(days=settings.training.window_days),
        schema=[
            Field(name="plays", dtype=Int64, description="Starts in the window"),
            Field(name="skip_rate", dtype=Float32, description="Shrunk share of starts skipped"),
        ],
        source=source(TRACK_STATS),
    )
    # The last 10 interactions; stale after a day. Pushed by the API the moment events arrive; the daily
    # snapshots remain its batch source for materialisation and point-in-time joins.
    recent_push = PushSource(name=USER_RECENT_PUSH, batch_source=source(USER_RECENT))
    recent = FeatureView(
        name=USER_RECENT,
        entities=[user],
        ttl=timedelta(hours=24),
        schema=[
            Field(name="last_track_ids", dtype=Array(Int64), description="Last 10 tracks started"),
            Field(name="last_skipped", dtype=Array(Int64), description="1 where that start was skipped"),
            Field(name="last_ts", dtype=Array(Int64), description="When each start happened (epoch ms, UTC)"),
        ],
        source=recent_push,
    )
    return [user, track, profile, stats, recent]


def feature_store(settings: Settings):
    """A FeatureStore over this data root, with the definitions applied."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    root = settings.home / "features"
    root.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=PROJECT,
        provider="local",
        registry=str(root / "registry.db"),
        offline_store={"type": "file"},
        online_store=online_store_config(settings),
        entity_key_serialization_version=3,
        repo_path=str(root),
    )
    store = FeatureStore(config=config)
    store.apply(definitions(settings))
    return store


def online_store_config(settings: Settings) -> dict:
    """Feast's online_store block for the configured store (the only place the choice is made)."""
    config = settings.feature_store
    if config.online_store == "redis":
        return {"type": "redis", "connection_string": config.redis_connection_string,
                "key_ttl_seconds": config.redis_key_ttl_seconds}
    return {"type": "sqlite", "path": str(settings.home / "features" / "online.db")}


def feature_version(settings: Settings, day: str) -> str:
    """Names the feature definitions and the snapshot day a prediction used."""
    views = [view for view in definitions(settings) if hasattr(view, "schema")]
    spec = [(v.name, sorted((f.name, str(f.dtype)) for f in v.schema), v.ttl.total_seconds()) for v in views]
    digest = hashlib.sha256(repr(spec).encode())
    return f"{day}.{digest.hexdigest()[:8]}"


def write_snapshots(settings: Settings, day: str, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Overwrite the day's partition of each offline view; return the paths."""
    paths = {}
    for view, frame in frames.items():
        path = offline_dir(settings, view) / f"date={day}" / "part.parquet"
        atomic_write_parquet(frame, path)
        paths[view] = str(path)
    return paths


def materialize(settings: Settings, day: str) -> None:
    """Load the snapshot that became valid at the end of `day` into the online store."""
    start = pd.Timestamp(day, tz="UTC")
    store = feature_store(settings)
    store.materialize(start_date=start.to_pydatetime(), end_date=(start + pd.Timedelta(days=1)).to_pydatetime())


def historical(settings: Settings, entity_df: pd.DataFrame, view: str, features: tuple[str, ...]) -> pd.DataFrame:
    """Point-in-time join: each entity row gets the view's values as they were at its timestamp.

    Rows with no snapshot in the TTL come back with nulls (Feast's file store drops them; we
    re-attach them so no training row silently disappears).
    """
    store = feature_store(settings)
    keyed = entity_df.reset_index(drop=True).assign(_row=lambda f: range(len(f)))
    refs = [f"{view}:{name}" for name in features]
    joined = store.get_historical_features(entity_df=keyed, features=refs).to_df()
    joined = joined.set_index("_row").reindex(range(len(keyed)))
    return joined[list(features)].reset_index(drop=True)


FEATURE_TS = "feature_ts"  # when the served values became true (NaT: nothing served)


def online(settings: Settings, view: str, key: str, ids, features: tuple[str, ...], store=None) -> pd.DataFrame:
    """Current online values for ids (one row per id, nulls where the store has none), with FEATURE_TS."""
    return online_views(settings, key, ids, {view: features}, store=store)[view]


def online_views(settings: Settings, key: str, ids, views: dict[str, tuple[str, ...]],
                 store=None) -> dict[str, pd.DataFrame]:
    """`online` for several views of one entity in a single store read (one round trip, one registry lookup)."""
    store = store or feature_store(settings)
    rows = [{key: int(i)} for i in ids]
    refs = [f"{view}:{name}" for view, names in views.items() for name in names]
    frame = store.get_online_features(features=refs, entity_rows=rows, full_feature_names=True).to_df(
        include_event_timestamps=True)
    out = {}
    for view, names in views.items():
        part = frame[[key]].copy()
        for name in names:
            part[name] = frame[f"{view}__{name}"]
        stamps = frame[[f"{view}__{name}__ts" for name in names]].max(axis=1).astype("float64")
        part[FEATURE_TS] = pd.to_datetime(stamps.where(stamps > 0), unit="s", utc=True)
        out[view] = part
    return out


class OnlineTable:
    """One feature view's online rows, read and written through the Feast provider of `store`.

    These are the calls `get_online_features` and `push` end in, without their per-call registry lookups and
    DataFrame conversions (milliseconds each: most of a freshness request). The rows stay in Feast's format in
    Feast's online store, so every other reader (point lookups, materialisation, `online`) sees them.
    """

    def __init__(self, store, view: str, key: str) -> None:
        self.store, self.key = store, key
        self.view = store.get_feature_view(view)
        self.provider = store._get_provider()
        self.types = {f.name: f.dtype.to_value_type() for f in self.view.features}

    def read(self, ids, features: tuple[str, ...]) -> list[tuple[pd.Timestamp | None, dict]]:
        """Per id: (when the values became true, {feature: Python value}); (None, {}) where nothing is stored."""
        from feast.type_map import feast_value_type_to_python_type

        rows = self.provider.online_read(self.store.config, self.view, [self._entity(i) for i in ids], list(features))
        return [(pd.Timestamp(ts).tz_convert("UTC") if ts is not None else None,
                 {name: feast_value_type_to_python_type(v) for name, v in (values or {}).items() if name in features})
                for ts, values in rows]

    def write(self, rows: list[tuple[int, int, dict]]) -> None:
        """Write rows (entity id, epoch ms the values became true, {feature: Python value} for every feature of the
        view) in one batch."""
        from datetime import UTC, datetime, timedelta

        from feast.type_map import python_values_to_proto_values

        protos = {n: python_values_to_proto_values([row[2][n] for row in rows], t) for n, t in self.types.items()}
        data = [(self._entity(i), {n: protos[n][r] for n in self.types},
                 datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000), None)
                for r, (i, ms, _) in enumerate(rows)]
        self.provider.online_write_batch(self.store.config, self.view, data, None)

    def _entity(self, entity_id):
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        return EntityKey(join_keys=[self.key], entity_values=[Value(int64_val=int(entity_id))])
