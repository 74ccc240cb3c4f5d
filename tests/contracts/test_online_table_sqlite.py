"""The online last-10 contract on the embedded default: Feast's SQLite online store in a fresh data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.features import store as fs
from pipeline.serve.online import LastTen
from tests.contracts.online_table import OnlineTableContract

pytestmark = pytest.mark.slow  # opening Feast's store for the first time in a process takes ~20 s


class TestSqliteOnlineTable(OnlineTableContract):
    @pytest.fixture
    def last_ten(self, tmp_path: Path) -> LastTen:
        settings = Settings(home=tmp_path / "home")
        table = LastTen(fs.OnlineTable(fs.feature_store(settings), fs.USER_RECENT, s.USER_ID))
        assert (settings.home / "features" / "online.db").exists()
        return table
