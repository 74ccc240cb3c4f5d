"""Published mixes in Postgres: versioned schema migrations and the publication store.

Chosen by `settings.scale_out.publish_database_url` (see `publish.publication_store`). One publication is ONE
transaction: every slot is upserted keyed by (user, date, mix, position), slots of the date that the new
publication no longer has are deleted, the date's manifest row is replaced and the `current` pointer moves.
Readers read inside one REPEATABLE READ snapshot, so they see the old publication or the new one, never a
user with slots of both.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from functools import lru_cache

import pandas as pd
import sqlalchemy as sa

from pipeline.core import schema as s

log = logging.getLogger(__name__)

SLOT_TABLE = "dailymix_slot"
PUBLICATION_TABLE = "dailymix_publication"
CURRENT_TABLE = "dailymix_current"
VERSION_TABLE = "dailymix_schema_version"
_LOCK_KEY = 0x6461696C796D6978  # "dailymix": serialises migrations and publications across processes

# The key of a slot, and every column a slot row stores (the order of schema.PUBLISHED_COLUMNS).
SLOT_KEY = (s.USER_ID, s.DATE, s.MIX_INDEX, s.POSITION)
SLOT_SQL_TYPES = {
    s.DATE: "date", s.USER_ID: "bigint", s.MIX_ID: "text", s.MIX_INDEX: "integer", s.MIX_TITLE: "text",
    s.POSITION: "integer", s.TRACK_ID: "bigint", s.ARTIST_ID: "bigint", s.GENRE: "text", s.MOOD: "text",
    s.DISCOVERY: "boolean", s.POLICY: "text", s.PROPENSITY: "double precision", s.SCORE: "double precision",
    s.MODEL_VERSION: "text", s.INDEX_VERSION: "text", s.FEATURE_VERSION: "text",
}
SLOT_COLUMNS = tuple(SLOT_SQL_TYPES)
NULLABLE = {s.SCORE}  # exploration slots are placed by the policy, not scored

# Versioned migrations, applied in order by `dailymix db upgrade` (and by the first publication if missing).
# Never edit an applied one: append the next version.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "published slots, one manifest per date, the current-date pointer", f"""
        CREATE TABLE {SLOT_TABLE} (
            {", ".join(f"{c} {t}{'' if c in NULLABLE else ' NOT NULL'}" for c, t in SLOT_SQL_TYPES.items())},
            PRIMARY KEY ({", ".join(SLOT_KEY)})
        );
        CREATE INDEX {SLOT_TABLE}_date ON {SLOT_TABLE} (date);
        CREATE TABLE {PUBLICATION_TABLE} (
            date date PRIMARY KEY,
            content_hash text NOT NULL,
            users integer NOT NULL,
            mixes integer NOT NULL,
            slots integer NOT NULL,
            lineage jsonb NOT NULL
        );
        CREATE TABLE {CURRENT_TABLE} (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            date date NOT NULL REFERENCES {PUBLICATION_TABLE} (date)
        );
    """),
)


@lru_cache(maxsize=8)
def engine(url: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True)


def schema_version(url: str) -> int:
    """The highest applied migration (0: none)."""
    with engine(url).connect() as conn:
        if not sa.inspect(conn).has_table(VERSION_TABLE):
            return 0
        return conn.execute(sa.text(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}")).scalar_one()


def upgrade(url: str) -> list[int]:
    """Apply every pending migration, each in its own transaction; returns the versions applied."""
    applied = []
    for version, description, ddl in MIGRATIONS:
        with engine(url).begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer PRIMARY KEY, "
                                 "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"))
            done = conn.execute(sa.text(f"SELECT 1 FROM {VERSION_TABLE} WHERE version = :v"), {"v": version}).first()
            if done:
                continue
            conn.exec_driver_sql(ddl)
            conn.execute(sa.text(f"INSERT INTO {VERSION_TABLE} (version, description) VALUES (:v, :d)"),
                         {"v": version, "d": description})
            applied.append(version)
            log.info("applied migration %d: %s", version, description)
    return applied


class PostgresStore:
    """Publications in Postgres (see the module docstring for the transaction)."""

    def __init__(self, url: str, batch_rows: int = 50_000) -> None:
        self.url = url
        self.batch_rows = batch_rows

    def write(self, day: str, slots: pd.DataFrame, manifest: dict) -> dict:
        if schema_version(self.url) < MIGRATIONS[-1][0]:
            upgrade(self.url)
        with engine(self.url).begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            conn.exec_driver_sql(f"CREATE TEMP TABLE incoming (LIKE {SLOT_TABLE}) ON COMMIT DROP")
            self._copy(conn, slots)
            conn.exec_driver_sql(_UPSERT)
            conn.execute(sa.text(f"DELETE FROM {SLOT_TABLE} AS old WHERE old.date = :day AND NOT EXISTS ("
                                 f"SELECT 1 FROM incoming AS new WHERE {_same_key('old', 'new')})"), {"day": day})
            conn.execute(sa.text(_PUBLICATION_UPSERT), {**manifest, "lineage": json.dumps(manifest["lineage"])})
            # The pointer only moves forward: a backfill rewrites its own date, never what readers see as latest.
            conn.execute(sa.text(f"INSERT INTO {CURRENT_TABLE} (date) VALUES (:day) ON CONFLICT (singleton) "
                                 f"DO UPDATE SET date = greatest({CURRENT_TABLE}.date, excluded.date)"), {"day": day})
        return manifest

    def _copy(self, conn: sa.Connection, slots: pd.DataFrame) -> None:
        cursor = conn.connection.dbapi_connection.cursor()
        frame = slots[list(SLOT_COLUMNS)]
        for start in range(0, len(frame), self.batch_rows):
            buffer = io.StringIO()
            frame.iloc[start:start + self.batch_rows].to_csv(buffer, index=False, header=False,
                                                             quoting=csv.QUOTE_MINIMAL)
            buffer.seek(0)
            cursor.copy_expert(f"COPY incoming ({', '.join(SLOT_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", buffer)

    def latest_date(self) -> str | None:
        if schema_version(self.url) == 0:
            return None
        with engine(self.url).connect() as conn:
            day = conn.execute(sa.text(f"SELECT date FROM {CURRENT_TABLE}")).scalar_one_or_none()
        return day.isoformat() if day else None

    def read(self, day: str | None, user_id: int | None = None) -> tuple[dict, pd.DataFrame]:
        """(manifest, slots) of a date (default: current), optionally one user's, from one consistent snapshot."""
        if schema_version(self.url) == 0:
            raise LookupError(f"nothing published in {_safe(self.url)}: run the dailymix_nightly DAG")
        with engine(self.url).connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            day = day or _iso(conn.execute(sa.text(f"SELECT date FROM {CURRENT_TABLE}")).scalar_one_or_none())
            if day is None:
                raise LookupError(f"nothing published in {_safe(self.url)}: run the dailymix_nightly DAG")
            row = conn.execute(sa.text(f"SELECT * FROM {PUBLICATION_TABLE} WHERE date = :day"), {"day": day})
            publication = row.mappings().first()
            if publication is None:
                raise LookupError(f"no mixes published for {day}")
            where = "date = :day" + (" AND user_id = :user" if user_id is not None else "")
            slots = pd.read_sql_query(
                sa.text(f"SELECT {', '.join(SLOT_COLUMNS)} FROM {SLOT_TABLE} WHERE {where} "
                        f"ORDER BY {s.USER_ID}, {s.MIX_INDEX}, {s.POSITION}"),
                conn, params={"day": day, "user": user_id})
        manifest = {k: publication[k] for k in ("content_hash", "users", "mixes", "slots", "lineage")}
        return {"date": day, **manifest}, _as_published(slots)


def _as_published(slots: pd.DataFrame) -> pd.DataFrame:
    """The dtypes of the nightly's slot frames (the date back to an ISO string), so both stores read alike."""
    slots[s.DATE] = slots[s.DATE].map(lambda d: d.isoformat())
    return slots.astype({c: s.PUBLISHED_DTYPES[c] for c in SLOT_COLUMNS})


def _same_key(left: str, right: str) -> str:
    return " AND ".join(f"{left}.{c} = {right}.{c}" for c in SLOT_KEY)


def _iso(day) -> str | None:
    return day.isoformat() if day else None


def _safe(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


_VALUE_COLUMNS = [c for c in SLOT_COLUMNS if c not in SLOT_KEY]
# Rows whose values did not change are left alone, so a rerun of the same night writes nothing.
_UPSERT = (
    f"INSERT INTO {SLOT_TABLE} ({', '.join(SLOT_COLUMNS)}) SELECT {', '.join(SLOT_COLUMNS)} FROM incoming "
    f"ON CONFLICT ({', '.join(SLOT_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _VALUE_COLUMNS)
    + f" WHERE ({', '.join(f'{SLOT_TABLE}.{c}' for c in _VALUE_COLUMNS)}) "
    f"IS DISTINCT FROM ({', '.join(f'excluded.{c}' for c in _VALUE_COLUMNS)})"
)
_PUBLICATION_UPSERT = (
    f"INSERT INTO {PUBLICATION_TABLE} (date, content_hash, users, mixes, slots, lineage) "
    "VALUES (:date, :content_hash, :users, :mixes, :slots, CAST(:lineage AS jsonb)) "
    "ON CONFLICT (date) DO UPDATE SET content_hash = excluded.content_hash, users = excluded.users, "
    "mixes = excluded.mixes, slots = excluded.slots, lineage = excluded.lineage"
)
