"""Offline evaluation: metrics with hand-computed answers, the hold-out protocol, and a world where the right
answer is known (two taste groups, two item blocks) so collaborative methods must beat popularity."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.config import PROJECT_ROOT
from pipeline.evaluation import baselines as bl
from pipeline.evaluation import offline as ev
from pipeline.evaluation.baselines import BASELINES

pytestmark = pytest.mark.slow  # real training, Great Expectations or fuzzing: seconds per test

REAL_PATH = PROJECT_ROOT.parent / "shared" / "data" / "hetrec2011-lastfm-2k"


# --- metrics ------------------------------------------------------------------------------------------------------


def test_recall_counts_hits_over_everything_held_out() -> None:
    top = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    relevant = [np.array([2, 9]), np.array([8])]
    assert ev.recall_at(top, relevant, 2) == pytest.approx((1 / 2 + 0) / 2)
    assert ev.recall_at(top, relevant, 4) == pytest.approx((1 / 2 + 1) / 2)


def test_users_without_held_out_items_are_not_averaged() -> None:
    assert ev.recall_at(np.array([[1], [2]]), [np.array([1]), np.array([], dtype=int)], 1) == 1.0


def test_ndcg_by_hand() -> None:
    # hits at ranks 2 and 3 of 3: DCG = 1/log2(3) + 1/log2(4); ideal = 1 + 1/log2(3)
    expected = (1 / np.log2(3) + 0.5) / (1 + 1 / np.log2(3))
    assert ev.ndcg_at(np.array([[1, 2, 3]]), [np.array([2, 3])], 3) == pytest.approx(expected)
    assert expected == pytest.approx(0.6934, abs=1e-4)
    # one held-out item found first: perfect, however many slots are left empty of hits
    assert ev.ndcg_at(np.array([[7, 1, 2]]), [np.array([7])], 3) == pytest.approx(1.0)
    assert ev.ndcg_at(np.array([[1, 2, 3]]), [np.array([9])], 3) == 0.0


def test_coverage_is_distinct_items_shown_over_catalog() -> None:
    top = np.array([[0, 1, 5], [1, 2, 6], [1, 0, -1]])  # -1: an empty slot, never counted
    assert ev.coverage_at(top, 1, 10) == pytest.approx(2 / 10)  # {0, 1}
    assert ev.coverage_at(top, 2, 10) == pytest.approx(3 / 10)  # {0, 1, 2}
    assert ev.coverage_at(top, 3, 10) == pytest.approx(5 / 10)  # {0, 1, 2, 5, 6}


def test_entropy_in_bits() -> None:
    assert ev.entropy_bits(np.array(["a", "a", "b", "b"])) == pytest.approx(1.0)
    assert ev.entropy_bits(np.array([3, 1, 2, 0])) == pytest.approx(2.0)
    assert ev.entropy_bits(np.array(["a", "a"])) == 0.0
    assert ev.entropy_bits(np.array([])) == 0.0


def test_genre_entropy_is_the_mean_over_users_of_their_own_list() -> None:
    genres = np.array([0, 0, 1, 1])  # items 0,1 in genre 0; items 2,3 in genre 1
    top = np.array([[0, 2, 1, 3], [0, 1, 2, 3]])
    # top 2: user 0 has one of each genre (1 bit), user 1 only genre 0 (0 bits)
    assert ev.genre_entropy_at(top, genres, 2) == pytest.approx(0.5)


def test_top_n_excludes_seen_items_and_orders_best_first() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]])
    seen = ev.make_split(np.array([0, 1]), np.array([0, 3]), (2, 4), np.zeros(4, dtype=int), np.array(["g"]), seed=0,
                         share=0.0).train
    assert ev.top_n(scores, seen, 3).tolist() == [[1, 3, 2], [2, 1, 0]]


# --- protocol -----------------------------------------------------------------------------------------------------


def _interactions(sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    users = np.repeat(np.arange(len(sizes)), sizes)
    items = np.concatenate([np.arange(n) for n in sizes])
    return users, items


def test_holdout_takes_a_fifth_of_each_users_items() -> None:
    users, _ = _interactions([50, 10, 7, 2, 1])
    held = ev.holdout_mask(users, 0.2, seed=0)
    assert np.bincount(users[held], minlength=5).tolist() == [10, 2, 1, 1, 0]


def test_holdout_is_seeded() -> None:
    users, _ = _interactions([50] * 20)
    a, b, c = (ev.holdout_mask(users, 0.2, seed) for seed in (4, 4, 5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_is_disjoint_and_complete() -> None:
    users, items = _interactions([50, 30, 12])
    split = ev.make_split(users, items, (3, 50), np.zeros(50, dtype=int), np.array(["g"]), seed=1)
    assert split.train.multiply(split.test).nnz == 0
    assert split.train.nnz + split.test.nnz == len(users)
    assert (split.train + split.test).toarray().sum() == len(users)
    assert ev.resplit(split, seed=2).test.multiply(split.test).nnz == 0  # validation comes from training only


def test_play_counts_follow_the_training_rows_into_validation() -> None:
    users, items = _interactions([50, 30, 12])
    plays = 1 + 7 * items  # a count that says which item it belongs to
    split = ev.make_split(users, items, (3, 50), np.zeros(50, dtype=int), np.array(["g"]), seed=1, plays=plays)
    validation = ev.resplit(split, seed=2)
    for part in (split, validation):
        counts = part.train_plays.tocoo()
        np.testing.assert_array_equal(counts.data, 1 + 7 * counts.col)
        assert (part.train_plays > 0).toarray().tolist() == (part.train > 0).toarray().tolist()


# --- a world with a known answer ----------------------------------------------------------------------------------


GROUP_USERS = (40, 60, 80, 140)  # the last group is the largest, so its items are the most popular
GROUP_ITEMS, LIKED = 20, 8
TINY_ALS = {"factors": 4, "regularization": 1.0, "weighting": "bm25"}  # one factor per taste group
# Settings for a world of 320 users and 80 items (HetRec's quick settings regularise far more than it holds).
TINY = {**BASELINES, "als": replace(BASELINES["als"], quick=TINY_ALS),
        "ease": replace(BASELINES["ease"], quick={"weighting": "binary", "regularization": 30.0})}


@pytest.fixture(scope="module")
def taste_groups() -> ev.Split:
    """Four taste groups, each with its own block of 20 items (one genre per block); every user likes 8 items
    of their block. Popularity pushes the big group's block on everyone; a collaborative method must stay in
    the user's own block, so it finds the held-out items far more often."""
    rng = np.random.default_rng(3)
    users, items = [], []
    group_of_user = np.repeat(np.arange(len(GROUP_USERS)), GROUP_USERS)
    for user, group in enumerate(group_of_user):
        users += [user] * LIKED
        items += (group * GROUP_ITEMS + rng.choice(GROUP_ITEMS, size=LIKED, replace=False)).tolist()
    genres = np.repeat(np.arange(len(GROUP_USERS)), GROUP_ITEMS)
    shape = (len(group_of_user), len(GROUP_USERS) * GROUP_ITEMS)
    return ev.make_split(np.array(users), np.array(items), shape, genres, np.array(list("abcd")), seed=0)


@pytest.fixture(scope="module")
def taste_group_result(taste_groups: ev.Split) -> dict:
    return ev.evaluate_split(taste_groups, seed=0, quick=True, baselines=TINY)


def test_result_has_exactly_the_published_keys(taste_group_result: dict) -> None:
    assert set(taste_group_result) == {"pipeline", "retrieval_only", "baselines", "mixes"}
    assert set(taste_group_result["baselines"]) == {"popularity", "als", "itemknn", "ease", "rp3beta"}
    for metrics in [taste_group_result["pipeline"], taste_group_result["retrieval_only"]]:
        assert tuple(metrics) == ev.METRICS
        assert all(isinstance(v, float) for v in metrics.values())
    for name, metrics in taste_group_result["baselines"].items():
        assert tuple(metrics) == (*ev.METRICS, "params")
        assert metrics["params"] == TINY[name].quick
    assert tuple(taste_group_result["mixes"]) == (*ev.METRICS, "discovery_share", "mixes_per_user")
    json.dumps(taste_group_result)  # serialisable as is


def test_collaborative_methods_beat_popularity(taste_group_result: dict) -> None:
    baselines = taste_group_result["baselines"]
    popularity = baselines["popularity"]
    for method in (*[baselines[name] for name in ("als", "itemknn", "ease", "rp3beta")],
                   taste_group_result["retrieval_only"], taste_group_result["pipeline"]):
        assert method["ndcg@10"] > 1.5 * popularity["ndcg@10"]
        assert method["recall@10"] > 1.5 * popularity["recall@10"]


def test_published_mixes_hold_every_familiar_track_and_one_mix_per_taste(taste_groups: ev.Split,
                                                                          taste_group_result: dict) -> None:
    """Each user has one taste (one genre): one mix of 30. A user knows only 5-7 artists, fewer than the
    familiar slots the rules keep, so every one of them is in the mix and the rest is new."""
    mixes = taste_group_result["mixes"]
    assert mixes["mixes_per_user"] == pytest.approx(1.0)
    known = np.diff(taste_groups.train.indptr)[np.diff(taste_groups.test.indptr) > 0]
    assert mixes["discovery_share"] == pytest.approx(1 - known.mean() / 30)
    assert mixes["ndcg@10"] < taste_group_result["pipeline"]["ndcg@10"]  # familiar tracks take slots


def test_collaborative_lists_stay_in_the_users_block(taste_groups: ev.Split) -> None:
    """The first group's users: ALS recommends from their block, popularity from the big group's."""
    first = np.arange(GROUP_USERS[0])
    data = taste_groups.interactions
    als_top = ev.top_n(bl.als(data, TINY_ALS, 0), taste_groups.train, 5)[first]
    popular_top = ev.top_n(bl.popularity(data, {}, 0), taste_groups.train, 5)[first]
    assert np.mean(taste_groups.genres[als_top] == 0) > 0.9
    assert np.mean(taste_groups.genres[popular_top] == len(GROUP_USERS) - 1) > 0.9


# --- real data (short) --------------------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_PATH.is_dir(), reason=f"HetRec data not at {REAL_PATH}")
def test_real_data_protocol_and_baselines_match_the_reference() -> None:
    """The split and two cheap baselines on HetRec, seed 0 (the full run: docs/evaluation.md)."""
    split = ev.load_split(REAL_PATH, seed=0)
    assert split.shape == (1892, 17632)
    assert split.train_plays.nnz == split.train.nnz and split.train_plays.max() > 1  # listening counts kept
    per_user = np.diff(split.test.indptr)
    total = per_user + np.diff(split.train.indptr)
    np.testing.assert_array_equal(per_user, np.where(total >= 2, np.maximum(np.floor(0.2 * total + 0.5), 1), 0))
    users = np.flatnonzero(per_user > 0)
    popularity = ev.all_metrics(ev.top_n(bl.popularity(split.interactions, {}, 0), split.train, 100), split, users)
    itemknn = ev.all_metrics(ev.top_n(bl.itemknn(split.interactions, BASELINES["itemknn"].quick, 0), split.train,
                                      100), split, users)
    assert popularity["ndcg@10"] == pytest.approx(0.080, abs=0.005)
    assert itemknn["ndcg@10"] == pytest.approx(0.217, abs=0.01)
