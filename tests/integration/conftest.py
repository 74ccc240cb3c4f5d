"""Real services for the integration tests: Postgres and Redis on this machine, skipped when they don't answer.

Every database a test uses is named `dailymix_i7_*`, created by the fixture and dropped afterwards (FORCE, so a
killed process holding a connection cannot leave it behind). Redis is used only through DB numbers 2–5.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from services import (
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
        from pipeline.publish_db import engine

        engine.cache_clear()
        drop_database(name)
