"""Integration tests talk to real services on this machine; each skips, saying why, when its service is down."""

from __future__ import annotations

import pytest

from pipeline.config import FeatureStoreConfig

REDIS_URL = "redis://127.0.0.1:6379/1"  # DB 1 belongs to these tests: they flush it, and only it


@pytest.fixture
def redis_db():
    """A flushed Redis DB 1 (flushed again afterwards); skips when Redis does not answer on 127.0.0.1:6379."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:  # refused, timed out, or auth needed
        pytest.skip(f"Redis does not answer at {REDIS_URL}: {error}")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def redis_store() -> FeatureStoreConfig:
    return FeatureStoreConfig(online_store="redis", redis_url=REDIS_URL)
