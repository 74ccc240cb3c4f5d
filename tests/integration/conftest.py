"""Real services for the integration tests: Postgres and Redis on this machine, skipped when they don't answer.

Every database a test uses is named `dailymix_i7_*`, created by the fixture and dropped afterwards (FORCE, so a
killed process holding a connection cannot leave it behind). Redis: DB 1 belongs to the online-store tests
(they flush it, and only it); the Celery tests use DB numbers 2–5.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.core.config import FeatureStoreConfig
from tests.integration.services import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    REDIS_HOST,
    REDIS_PORT,
    admin_connection,
    answers,
    create_database,
    database_url,
    drop_database,
)


@pytest.fixture(scope="session")
def postgres() -> None:
    if not answers(PG_HOST, PG_PORT):
        pytest.skip(f"Postgres does not answer on {PG_HOST}:{PG_PORT} (integration tests need it)")
    try:
        admin_connection().close()
    except Exception as error:  # reachable but refusing us (auth): skip with the reason
        pytest.skip(f"cannot connect to Postgres {PG_HOST}:{PG_PORT} as {PG_USER}: {error}")


@pytest.fixture(scope="session")
def redis_server() -> None:
    if not answers(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT} (integration tests need it)")


@pytest.fixture
def publish_db(postgres) -> Iterator[str]:
    """A fresh, empty database for published mixes; its SQLAlchemy URL."""
    name = create_database("pub")
    try:
        yield database_url(name)
    finally:
        from pipeline.publish.postgres import engine

        engine.cache_clear()
        drop_database(name)

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
