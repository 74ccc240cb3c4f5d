"""The two levers the bench measures beside the shard: retrieval depth and the whole-user peer."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.bench.nightly import (
    SyntheticWorld,
    _context,
    build_index,
    depth_trade,
    synthetic_world,
    train_ranker,
    whole_user_peer,
)
from pipeline.candidates.ann import exact_top_k, normalise
from pipeline.core.config import BenchConfig, Settings
from pipeline.nightly.shard import _candidates, _tastes


class ExactIndex:
    """Exact cosine search: each query's true top k, so the depth trade's recall is known."""

    def __init__(self, items: np.ndarray, track_ids: np.ndarray) -> None:
        self.unit, self.track_ids = normalise(items).astype(np.float32), track_ids

    def query_batch(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = exact_top_k(vectors.astype(np.float32), self.unit, k)
        return self.track_ids[rows], np.zeros(rows.shape)


def test_exact_search_finds_the_whole_top_at_any_depth_that_reaches_it() -> None:
    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(500, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    ids = np.arange(1000, 1500)
    trade = depth_trade(queries, items, ids, ExactIndex(items, ids), [20, 40, 80], rank_depth=40)
    recall = [row["recall_of_top_40"] for row in trade["depths"]]
    assert recall == [pytest.approx(0.5), 1.0, 1.0]  # 20 of the top 40, then all of them
    assert trade["rank_depth"] == 40 and trade["queries"] == 7


@pytest.mark.slow
def test_the_peer_works_on_the_candidates_the_shard_blocks_work_on(tmp_path) -> None:
    config = BenchConfig(tracks=3000, users=12, train_rows=2000, annoy_trees=8)
    world: SyntheticWorld = synthetic_world(config.tracks, config.users, config.dim, config.plays_per_user, 7)
    settings = Settings(home=tmp_path, seed=7)
    model = train_ranker(world, settings, config.train_rows, 7)
    index = build_index(world, "annoy", config, tmp_path / "cache", 7)
    users = world.user_features["user_id"].to_numpy()
    ctx = _context(world, settings, index, model, users)
    peer = whole_user_peer(ctx, users.tolist(), model)
    work = _candidates(ctx, _tastes(ctx, users.tolist()))
    assert peer["users_with_clusters"] == len(work) > 0
    assert peer["candidates_per_user"] == pytest.approx(np.mean([len(c["track_id"]) for *_, c in work]))
    assert peer["ms_per_user"] > 0
