"""Real services for the integration tests: Postgres and Redis on this machine, skipped when they don't answer.

Every database a test uses is named `dailymix_i7_*`, created by the fixture and dropped afterwards (FORCE, so a
killed process holding a connection cannot leave it behind). Redis is used only through DB numbers 2–5.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = os.environ.get("DAILYMIX_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DAILYMIX_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("DAILYMIX_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("DAILYMIX_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("DAILYMIX_TEST_REDIS_PORT", "6379"))


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _admin_connection():
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
    connection.autocommit = True
    return connection


@pytest.fixture(scope="session")
def postgres() -> None:
    if not _answers(PG_HOST, PG_PORT):
        pytest.skip(f"Postgres does not answer on {PG_HOST}:{PG_PORT} (integration tests need it)")
    try:
        _admin_connection().close()
    except Exception as error:  # reachable but refusing us (auth): skip with the reason
        pytest.skip(f"cannot connect to Postgres {PG_HOST}:{PG_PORT} as {PG_USER}: {error}")


@pytest.fixture(scope="session")
def redis_server() -> None:
    if not _answers(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis does not answer on {REDIS_HOST}:{REDIS_PORT} (integration tests need it)")


def database_url(name: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def create_database(purpose: str) -> str:
    name = f"dailymix_i7_{purpose}_{uuid.uuid4().hex[:8]}"
    connection = _admin_connection()
    try:
        connection.cursor().execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    return name


def drop_database(name: str) -> None:
    assert name.startswith("dailymix_i7_"), name
    connection = _admin_connection()
    try:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        connection.close()


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
