"""The Redis online store through Feast and the API: materialise, push, read, and the 24 h TTL of last-10."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipeline.core import schema as s
from pipeline.core.config import FeatureStoreConfig, Settings, WorldConfig
from pipeline.core.paths import Layout
from pipeline.features import store as fs
from pipeline.features.daily import build_offline_features, ingest_day, materialize_online
from pipeline.serve.api import create_app
from pipeline.sim.world import generate_world, history_days, write_world
from tests.helpers import Clock

pytestmark = pytest.mark.integration

WORLD = WorldConfig(n_users=6, n_tracks=300, n_artists=80, history_days=1)
DAY = history_days(WORLD)[-1]
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOON = pd.Timestamp(f"{DAY}T12:00:00Z")


@pytest.fixture
def settings(tmp_path, redis_store: FeatureStoreConfig, redis_db) -> Settings:
    settings = Settings(home=tmp_path / "home", feature_store=redis_store)
    write_world(generate_world(WORLD), Layout(settings.home))
    return settings


def test_materialised_snapshot_is_served_from_redis(settings: Settings, redis_db) -> None:
    ingest_day(settings, DAY)
    snapshot = pd.read_parquet(build_offline_features(settings, DAY)[fs.USER_PROFILE])
    assert len(snapshot) >= 3
    materialize_online(settings, DAY)
    assert redis_db.dbsize() > 0  # the rows live in Redis DB 1 ...
    assert not (settings.home / "features" / "online.db").exists()  # ... and no SQLite file was used

    users = snapshot[s.USER_ID].tolist()
    served = fs.online(settings, fs.USER_PROFILE, s.USER_ID, [*users, 10**9], ("plays", "skip_rate", "genre_affinity"))
    known = served.iloc[: len(users)].reset_index(drop=True)
    assert known["plays"].tolist() == snapshot["plays"].tolist()
    assert known["skip_rate"].to_numpy() == pytest.approx(snapshot["skip_rate"].to_numpy(), rel=1e-6)
    np.testing.assert_allclose(np.stack(known["genre_affinity"]), np.stack(snapshot["genre_affinity"]), rtol=1e-6)
    assert (known[fs.FEATURE_TS] == pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(days=1)).all()
    unknown = served.iloc[-1]
    assert unknown["plays"] is None or pd.isna(unknown["plays"])


def test_a_play_reaches_redis_at_once_and_leaves_last_ten_after_24h(settings: Settings, redis_db) -> None:
    clock = Clock(NOON)
    client = TestClient(create_app(settings, TOKEN, clock=clock))
    batch = [{"user_id": 2, "track_id": t, "ts": f"{DAY}T11:{m:02d}:00Z", "ms_played": 60_000, "skipped": m == 5}
             for m, t in ((0, 10), (5, 11))]
    assert client.post("/v1/events", headers=AUTH, json={"events": batch}).status_code == 202
    assert redis_db.dbsize() > 0

    items = client.get("/v1/users/2/features", headers=AUTH).json()["last_interactions"]["items"]
    assert [(i["track_id"], i["skipped"]) for i in items] == [(10, False), (11, True)]
    # A second API process over the same Redis (its own Feast registry) sees the push: the point of Redis.
    other = Settings(home=settings.home.parent / "replica", feature_store=settings.feature_store)
    write_world(generate_world(WORLD), Layout(other.home))
    replica = TestClient(create_app(other, TOKEN, clock=clock))
    assert replica.get("/v1/users/2/features", headers=AUTH).json()["last_interactions"]["items"] == items

    clock.at = pd.Timestamp(f"{DAY}T11:00:00Z") + pd.Timedelta(hours=24, minutes=1)  # the 11:00 play is now stale
    items = client.get("/v1/users/2/features", headers=AUTH).json()["last_interactions"]["items"]
    assert [i["track_id"] for i in items] == [11]
    clock.at = pd.Timestamp(f"{DAY}T11:05:00Z") + pd.Timedelta(hours=24, seconds=1)
    body = client.get("/v1/users/2/features", headers=AUTH).json()["last_interactions"]
    assert body["items"] == [] and body["feature_ts"] is None


def test_last_ten_merges_batches_in_redis(settings: Settings) -> None:
    client = TestClient(create_app(settings, TOKEN, clock=Clock(NOON)))
    for first in (0, 7):
        batch = [{"user_id": 4, "track_id": 100 + i, "ts": f"{DAY}T10:{i:02d}:00Z", "ms_played": 60_000,
                  "skipped": False} for i in range(first, first + 7)]
        assert client.post("/v1/events", headers=AUTH, json={"events": batch}).status_code == 202
    items = client.get("/v1/users/4/features", headers=AUTH).json()["last_interactions"]["items"]
    assert [i["track_id"] for i in items] == list(range(104, 114))
