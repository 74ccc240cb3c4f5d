"""The Postgres store keeps the publication-store contract; skipped when Postgres does not answer."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from pipeline.publish.postgres import SLOT_TABLE, PostgresStore, engine
from tests.contracts.publication_store import PublicationStoreContract

pytestmark = pytest.mark.integration


class TestPostgresStore(PublicationStoreContract):
    @pytest.fixture
    def store(self, publish_db: str) -> PostgresStore:
        return PostgresStore(publish_db, batch_rows=40)  # 90 slots: the COPY runs in three batches

    @pytest.fixture
    def stored_slot_rows(self, publish_db: str) -> Callable[[str], int]:
        def rows(day: str) -> int:
            with engine(publish_db).connect() as conn:
                return conn.execute(sa.text(f"SELECT count(*) FROM {SLOT_TABLE} WHERE date = :day"),
                                    {"day": day}).scalar_one()

        return rows
