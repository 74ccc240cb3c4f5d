"""The published world the serving tests share: a small catalog and one publication (user 1, two mixes)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import ApiConfig, Settings, WorldConfig
from pipeline.core.paths import Layout
from pipeline.publish.files import publish
from pipeline.sim.world import generate_world, write_world
from tests.helpers import catalog_mix, write_plan


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """World (300 tracks, 80 artists) plus one publication: user 1 with two mixes."""
    settings = Settings(home=tmp_path_factory.mktemp("api") / "home", api=ApiConfig(max_body_bytes=20_000,
                                                                                     max_batch_rows=50))
    world = generate_world(WorldConfig(n_users=5, n_tracks=300, n_artists=80, history_days=1))
    write_world(world, Layout(settings.home))
    catalog = world.catalog
    counts = catalog[s.ARTIST_ID].value_counts()
    artists = counts.index.tolist()  # most prolific first: artists[0] and artists[29] have two tracks
    slots = pd.concat([catalog_mix(catalog, 1, 0, artists[:29]), catalog_mix(catalog, 1, 1, artists[29:58])],
                      ignore_index=True)
    shard = settings.home / "nightly" / "shards" / "shard-0000.parquet"
    shard.parent.mkdir(parents=True)
    slots.to_parquet(shard, index=False)
    publish(settings, write_plan(settings), [str(shard)], run_id="run-1")
    return settings
