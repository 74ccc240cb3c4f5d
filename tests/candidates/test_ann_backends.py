"""One contract, every ANN backend: what retrieval relies on holds whichever index `retrieval.backend` picks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.candidates.ann import (
    BACKENDS,
    MISSING,
    AnnoyIndex,
    Tuning,
    backend_class,
    build_for_recall,
    build_index,
    exact_top_k,
    file_digest,
    index_size_bytes,
    load_index,
    mips_to_cosine,
    normalise,
    recall_at_k,
)

N, DIM, K = 2000, 32, 50
FIRST_TRACK = 70_000  # ids differ from rows, so the id mapping is exercised
QUERY_EFFORT = {"annoy": "search_k", "voyager": "ef", "faiss": "nprobe"}  # what `with_query_effort` sets
TUNED_EFFORT = {"annoy": "n_trees", "voyager": "ef", "faiss": "nprobe"}  # what tuning grows
# Cheap tunings: annoy doubles trees 2 → 4 → 8, voyager (a small graph) doubles ef K → 2K → 4K, faiss doubles
# the cells it scans 1 → 2 → 4.
CAPPED_TUNING = {"annoy": Tuning(k=K, n_trees=2, max_trees=8),
                 "voyager": Tuning(k=K, m=8, ef_construction=50, max_ef=4 * K),
                 "faiss": Tuning(k=K, nprobe=1, max_nprobe=4)}
# A shallow and a deep query effort: annoy and voyager count neighbours visited, faiss counts cells scanned.
SHALLOW_DEEP = {"annoy": (K, 50 * K), "voyager": (K, 50 * K), "faiss": (1, 64)}
SMALL_BUILD = {"annoy": {"n_trees": 5}, "voyager": {"m": 8, "ef_construction": 50}, "faiss": {"nlist": 20}}


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return normalise(np.random.default_rng(11).normal(size=(N, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return normalise(np.random.default_rng(12).normal(size=(50, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def track_ids() -> np.ndarray:
    return (np.arange(N, dtype=np.int64) * 3) + FIRST_TRACK


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def built(backend, tmp_path_factory, vectors, track_ids):
    """Each backend with its default knobs (annoy: 50 trees; voyager: M 16, ef 1000; faiss: nprobe 32)."""
    params = {"n_trees": 50} if backend == "annoy" else {}
    return build_index(backend, vectors, track_ids, tmp_path_factory.mktemp(backend), seed=7, **params)


class TestContract:
    def test_own_vector_comes_first_with_cosine_one(self, built, vectors, track_ids) -> None:
        for row in (0, 1, 999, N - 1):
            found, cosine = built.query(vectors[row], K)
            assert len(found) == K
            assert found[0] == track_ids[row]
            assert cosine[0] == pytest.approx(1.0, abs=1e-4)
            assert np.all(np.diff(cosine) <= 1e-6)  # best first

    def test_ids_are_track_ids_and_scores_true_cosines(self, built, vectors, queries, track_ids) -> None:
        found, cosine = built.query(queries[0] * 4.2, K)  # cosine: the query's norm does not matter
        assert set(found) <= set(track_ids.tolist())
        rows = (found - FIRST_TRACK) // 3
        np.testing.assert_allclose(cosine, vectors[rows] @ queries[0], atol=1e-4)

    def test_save_and_load_give_the_same_answers(self, built, vectors) -> None:
        loaded = load_index(built.path.parent)
        assert type(loaded) is type(built) and loaded.params == built.params and loaded.dim == DIM
        np.testing.assert_array_equal(loaded.track_ids, built.track_ids)
        for row in (3, 77):
            a, b = built.query(vectors[row], K), loaded.query(vectors[row], K)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_allclose(a[1], b[1], atol=1e-6)

    def test_recall_against_exact_search_with_default_knobs(self, built, vectors, queries) -> None:
        assert recall_at_k(built, queries, vectors, K) >= 0.95

    def test_batch_equals_single_queries(self, built, queries) -> None:
        ids, cosine = built.query_batch(queries[:10], K)
        assert ids.shape == cosine.shape == (10, K)
        for i, query in enumerate(queries[:10]):
            single_ids, single_cosine = built.query(query, K)
            np.testing.assert_array_equal(ids[i], single_ids)
            np.testing.assert_allclose(cosine[i], single_cosine, atol=1e-6)

    def test_same_seed_same_index_file(self, backend, tmp_path: Path, vectors, track_ids) -> None:
        a = build_index(backend, vectors, track_ids, tmp_path / "a", seed=3, **SMALL_BUILD[backend])
        b = build_index(backend, vectors, track_ids, tmp_path / "b", seed=3, **SMALL_BUILD[backend])
        assert file_digest(a.path) == file_digest(b.path)
        assert index_size_bytes(tmp_path / "a") == a.path.stat().st_size > 0

    def test_tuning_reaches_the_target_recall(self, backend, tmp_path: Path, vectors, queries, track_ids) -> None:
        tuned = build_for_recall(backend, vectors, track_ids, tmp_path, 7, queries, Tuning(k=K, n_trees=2))
        assert tuned.recall >= 0.95
        assert tuned.attempts[-1]["recall"] == tuned.recall
        assert recall_at_k(load_index(tmp_path), queries, vectors, K) == pytest.approx(tuned.recall)

    def test_with_query_effort_changes_only_the_query_depth(self, backend, built, vectors, queries) -> None:
        key = QUERY_EFFORT[backend]
        assert key in built.effort_keys
        before = dict(built.params)
        efforts = SHALLOW_DEEP[backend]
        shallow, deep = (built.with_query_effort(effort) for effort in efforts)
        for index, effort in zip((shallow, deep), efforts, strict=True):
            assert type(index) is type(built) and index.path == built.path and index.dim == built.dim
            np.testing.assert_array_equal(index.track_ids, built.track_ids)
            assert index.params == {**before, key: effort}
        assert built.params == before  # a new index, the original untouched
        assert recall_at_k(shallow, queries, vectors, K) < recall_at_k(deep, queries, vectors, K)  # it searches

    def test_tuned_is_what_build_for_recall_builds_and_is_deterministic(self, backend, tmp_path: Path, vectors,
                                                                        queries, track_ids) -> None:
        tuning = replace(CAPPED_TUNING[backend], target_recall=0.9)
        direct = backend_class(backend).tuned(vectors, track_ids, tmp_path / "a", 7, queries, tuning, K)
        built = build_for_recall(backend, vectors, track_ids, tmp_path / "b", 7, queries, tuning)
        assert direct.attempts == built.attempts and direct.recall == built.recall
        assert direct.index.params == built.index.params
        assert file_digest(direct.index.path) == file_digest(built.index.path)
        assert load_index(tmp_path / "a").params == direct.index.params  # saved with the depth it was tuned to

    def test_tuning_short_of_the_target_grows_effort_to_the_cap_and_returns_the_last(self, backend, tmp_path: Path,
                                                                                      vectors, queries,
                                                                                      track_ids) -> None:
        key = TUNED_EFFORT[backend]
        unreachable = replace(CAPPED_TUNING[backend], target_recall=1.01)
        tuned = build_for_recall(backend, vectors, track_ids, tmp_path, 7, queries, unreachable)
        efforts = [attempt[key] for attempt in tuned.attempts]
        assert efforts == [efforts[0] * 2**i for i in range(len(efforts))] and len(efforts) == 3
        assert tuned.index.params[key] == efforts[-1]
        assert tuned.recall == tuned.attempts[-1]["recall"] < 1.01
        assert load_index(tmp_path).params == tuned.index.params


def test_unknown_backend_is_refused(tmp_path: Path, vectors, track_ids) -> None:
    with pytest.raises(ValueError, match="unknown ANN backend 'scann'"):
        build_index("scann", vectors, track_ids, tmp_path, seed=1)


def test_annoy_tuning_doubles_trees_until_the_target_and_stops_at_the_cap(tmp_path: Path, vectors, queries,
                                                                          track_ids) -> None:
    tuned = build_for_recall("annoy", vectors, track_ids, tmp_path, 7, queries, Tuning(k=K, n_trees=1))
    trees = [a["n_trees"] for a in tuned.attempts]
    assert trees == [2**i for i in range(len(trees))]
    assert all(a["recall"] < 0.95 for a in tuned.attempts[:-1])
    capped = build_for_recall("annoy", vectors, track_ids, tmp_path / "c", 7, queries,
                              Tuning(k=K, n_trees=1, max_trees=1, search_k=K))
    assert [a["n_trees"] for a in capped.attempts] == [1] and capped.recall < 0.5


def test_shallow_annoy_batch_pads_missing_neighbours(tmp_path: Path, vectors, queries, track_ids) -> None:
    weak = AnnoyIndex.build(vectors, track_ids, tmp_path, n_trees=1, seed=7, search_k=5)
    ids, cosine = weak.query_batch(queries[:5], K)
    assert ids.shape == (5, K)
    assert np.all(np.isnan(cosine[ids == MISSING]))


def test_mips_transform_turns_dot_product_order_into_cosine_order() -> None:
    rng = np.random.default_rng(5)
    items, users = rng.normal(size=(300, 8)) * rng.uniform(0.1, 3, size=(300, 1)), rng.normal(size=(20, 8))
    items_c, users_c = mips_to_cosine(items, users)
    np.testing.assert_allclose(np.linalg.norm(items_c, axis=1), np.linalg.norm(items, axis=1).max(), rtol=1e-5)
    for user, user_c in zip(users, users_c, strict=True):
        assert set(np.argsort(-(items @ user))[:10]) == set(exact_top_k(user_c[None, :], items_c, 10)[0])
