"""The online last-10 contract on the scaled-out store: Feast's Redis online store (DB 1, flushed per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import schema as s
from pipeline.core.config import FeatureStoreConfig, Settings
from pipeline.features import store as fs
from pipeline.serve.online import LastTen
from tests.contracts.online_table import NOON, OnlineTableContract, play


class TestRedisOnlineTable(OnlineTableContract):
    @pytest.fixture
    def home(self, tmp_path: Path) -> Path:
        return tmp_path / "home"

    @pytest.fixture
    def last_ten(self, home: Path, redis_store: FeatureStoreConfig, redis_db) -> LastTen:
        settings = Settings(home=home, feature_store=redis_store)
        return LastTen(fs.OnlineTable(fs.feature_store(settings), fs.USER_RECENT, s.USER_ID))

    def test_the_rows_live_in_redis(self, last_ten: LastTen, redis_db, home: Path) -> None:
        assert redis_db.dbsize() == 0
        last_ten.merge([play(1, 10, "11:00")], NOON)
        assert redis_db.dbsize() == 1 and not (home / "features" / "online.db").exists()
