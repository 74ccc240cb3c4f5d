"""A shard's blocks: one batched ANN search per block gives each user exactly the mixes it gets alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from pipeline.bench.nightly import DAY, synthetic_world, train_ranker
from pipeline.candidates.ann import build_index
from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.nightly.shard import ShardContext, shard_slots
from pipeline.scoring.scorer import SklearnScorer

NIGHT = {"date": DAY, "model_version": "1", "index_version": "test", "feature_version": "test"}
SEED = 3
pytestmark = pytest.mark.slow  # a ranker is trained and every user goes through the shard twice


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One OpenMP thread, as a worker slot runs (threads spinning on a busy machine cost far more than they save)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def world():
    return synthetic_world(n_tracks=4000, n_users=24, dim=16, plays_per_user=60.0, seed=SEED)


@pytest.fixture(scope="module")
def model(world, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("ranker"), seed=SEED, training={"max_iter": 20})
    return train_ranker(world, settings, n_rows=2000, seed=SEED)


@pytest.fixture(scope="module", params=["annoy", "faiss"])
def index(request, world, tmp_path_factory):
    params = {"n_trees": 8} if request.param == "annoy" else {"nlist": 32, "nprobe": 4}
    return build_index(request.param, world.embeddings.item_factors, world.embeddings.track_ids,
                       tmp_path_factory.mktemp(request.param), seed=SEED, **params)


def _slots(world, model, index, home: Path, block_users: int) -> pd.DataFrame:
    settings = Settings(home=home, seed=SEED, shard={"block_users": block_users})
    ctx = ShardContext(settings, DAY, world.catalog, world.embeddings, index, SklearnScorer(model), world.events,
                       world.user_features, world.track_features)
    return shard_slots(ctx, world.user_features[s.USER_ID].tolist(), NIGHT)


def test_a_block_gives_every_user_the_mixes_it_gets_alone(world, model, index, tmp_path: Path) -> None:
    alone = _slots(world, model, index, tmp_path, block_users=1)
    together = _slots(world, model, index, tmp_path, block_users=10)
    assert alone[s.USER_ID].nunique() == len(world.user_features) and len(alone) > 0
    pd.testing.assert_frame_equal(alone, together)


def test_candidates_from_the_blocks_search_equal_the_users_own_search(world, model, index, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, seed=SEED)
    ctx = ShardContext(settings, DAY, world.catalog, world.embeddings, index, SklearnScorer(model), world.events,
                       world.user_features, world.track_features)
    histories = [ctx.user_history(user) for user in world.user_features[s.USER_ID].tolist()[:6]]
    clusters = [ctx.source.clusters(history) for history in histories]
    found_ids, found_cosine = ctx.source.neighbours([c for user in clusters for c in user])
    start = 0
    for history, own in zip(histories, clusters, strict=True):
        end = start + len(own)
        from_block = ctx.source.candidates(own, history, (found_ids[start:end], found_cosine[start:end]))
        alone = ctx.source.candidates(own, history)
        assert from_block.keys() == alone.keys()
        for name in alone:
            np.testing.assert_array_equal(from_block[name], alone[name])
        start = end
    assert start == len(found_ids) > len(histories)  # users with several clusters each
