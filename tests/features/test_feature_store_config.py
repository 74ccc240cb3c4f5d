"""Choosing the online store is configuration: defaults, env overrides, and the Feast block each choice yields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.core.config import FeatureStoreConfig, Settings, load_settings, save_settings
from pipeline.features import store as fs


def test_default_is_sqlite_under_the_data_root(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DAILYMIX_ONLINE_STORE", raising=False)
    settings = load_settings(tmp_path)
    assert fs.online_store_config(settings) == {"type": "sqlite", "path": str(tmp_path / "features" / "online.db")}


def test_env_selects_redis_without_code_changes(tmp_path, monkeypatch) -> None:
    save_settings(Settings(home=tmp_path))
    monkeypatch.setenv("DAILYMIX_ONLINE_STORE", "redis")
    monkeypatch.setenv("DAILYMIX_REDIS_URL", "redis://cache.internal:6380/2")
    settings = load_settings(tmp_path)
    assert fs.online_store_config(settings) == {"type": "redis", "connection_string": "cache.internal:6380,db=2",
                                                "key_ttl_seconds": None}


@pytest.mark.parametrize("url,expected", [
    ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
    ("redis://localhost", "localhost:6379,db=0"),
    ("rediss://:s%40cret@r.example:7000/5", "r.example:7000,db=5,password=s@cret,ssl=true"),
])
def test_redis_url_becomes_feasts_connection_string(url: str, expected: str) -> None:
    assert FeatureStoreConfig(redis_url=url).redis_connection_string == expected


@pytest.mark.parametrize("env", [{"DAILYMIX_ONLINE_STORE": "memcached"}, {"DAILYMIX_REDIS_URL": "127.0.0.1:6379"}])
def test_bad_env_values_are_rejected_by_name(tmp_path, monkeypatch, env: dict) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=r"online_store|redis_url"):
        load_settings(tmp_path)
