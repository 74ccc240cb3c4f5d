"""The file store keeps the publication-store contract (the Postgres store: tests/integration)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.config import Settings
from pipeline.publish.files import FileStore, date_dir
from tests.contracts.publication_store import PublicationStoreContract


class TestFileStore(PublicationStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> FileStore:
        return FileStore(Settings(home=tmp_path / "home"))

    @pytest.fixture
    def stored_slot_rows(self, store: FileStore) -> Callable[[str], int]:
        """Rows of every mixes file of the day (after a change the store also keeps the file just replaced)."""
        def rows(day: str) -> int:
            return sum(len(pd.read_parquet(path)) for path in date_dir(store.settings, day).glob("mixes-*.parquet"))

        return rows
