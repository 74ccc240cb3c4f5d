"""Where the integration tests find Postgres and Redis, and the databases they create (`dailymix_i7_*` only)."""

from __future__ import annotations

import os
import socket
import uuid

PG_HOST = os.environ.get("DAILYMIX_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("DAILYMIX_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("DAILYMIX_TEST_PG_USER", "postgres")
REDIS_HOST = os.environ.get("DAILYMIX_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("DAILYMIX_TEST_REDIS_PORT", "6379"))


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def admin_connection():
    import psycopg2

    connection = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
    connection.autocommit = True
    return connection


def database_url(name: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


def create_database(purpose: str) -> str:
    name = f"dailymix_i7_{purpose}_{uuid.uuid4().hex[:8]}"
    connection = admin_connection()
    try:
        connection.cursor().execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    return name


def drop_database(name: str) -> None:
    assert name.startswith("dailymix_i7_"), name
    connection = admin_connection()
    try:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        connection.close()
