"""ANN index: own-vector lookups, exact search as ground truth, and recall that responds to the index's effort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.candidates.ann import AnnoyIndex, exact_top_k, file_digest, normalise, recall_at_k

N, DIM, K = 1000, 64, 10
FIRST_TRACK = 5000  # track ids differ from row numbers, so the id mapping is exercised


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return normalise(np.random.default_rng(1234).normal(size=(N, DIM)))


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return normalise(np.random.default_rng(4321).normal(size=(100, DIM)))


@pytest.fixture(scope="module")
def track_ids() -> np.ndarray:
    return np.arange(N, dtype="int64") + FIRST_TRACK


@pytest.fixture(scope="module")
def thorough(tmp_path_factory, vectors, track_ids) -> AnnoyIndex:
    return AnnoyIndex.build(vectors, track_ids, tmp_path_factory.mktemp("thorough"), n_trees=50, seed=7,
                            search_k=5000)


def test_normalise_gives_unit_rows_and_leaves_zero_rows() -> None:
    out = normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def test_own_vector_is_its_own_nearest_neighbour(thorough, vectors, track_ids) -> None:
    for row in (0, 1, 500, N - 1):
        found, cosine = thorough.query(vectors[row], K)
        assert len(found) == K
        assert found[0] == track_ids[row]
        assert cosine[0] == pytest.approx(1.0, abs=1e-5)
        assert np.all(np.diff(cosine) <= 1e-9)  # best first


def test_query_cosines_are_true_cosines(thorough, vectors, queries, track_ids) -> None:
    found, cosine = thorough.query(queries[0] * 7.5, K)  # angular: the query's norm does not matter
    rows = found - FIRST_TRACK
    np.testing.assert_allclose(cosine, vectors[rows] @ queries[0], atol=1e-5)


def test_load_gives_the_same_answers(thorough, vectors) -> None:
    loaded = AnnoyIndex.load(thorough.path.parent)
    assert (loaded.dim, loaded.n_trees, loaded.search_k) == (DIM, 50, 5000)
    np.testing.assert_array_equal(loaded.track_ids, thorough.track_ids)
    for row in (3, 77):
        a, b = thorough.query(vectors[row], K), loaded.query(vectors[row], K)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])


def test_same_seed_same_index_file(tmp_path: Path, vectors, track_ids) -> None:
    a = AnnoyIndex.build(vectors, track_ids, tmp_path / "a", n_trees=5, seed=3)
    b = AnnoyIndex.build(vectors, track_ids, tmp_path / "b", n_trees=5, seed=3)
    assert file_digest(a.path) == file_digest(b.path)


def test_exact_top_k_equals_brute_force_sort(vectors, queries) -> None:
    top = exact_top_k(queries, vectors, K)
    assert top.shape == (len(queries), K)
    brute = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :K]
    for got, want in zip(top, brute, strict=True):
        assert sorted(got) == sorted(want)  # the same neighbours (order within the k is not promised)


def test_exact_top_k_ranks_by_cosine_not_dot_product() -> None:
    vectors = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, 1.0]])
    query = np.array([[1.0, 0.1]])
    assert exact_top_k(query, vectors, 1).tolist() == [[0]]  # the long vector [10, 10] has the larger dot product
    assert sorted(exact_top_k(query, vectors, 2)[0]) == [0, 1]
    assert exact_top_k(query, vectors, 10).shape == (1, 3)  # k capped at the number of vectors


def test_recall_is_near_one_with_many_trees(thorough, vectors, queries) -> None:
    assert recall_at_k(thorough, queries, vectors, K) >= 0.99


def test_recall_drops_with_one_tree_and_small_search(tmp_path: Path, vectors, queries, track_ids) -> None:
    # 64-dim random data is hard for one tree searched over n_trees * k = 10 nodes: recall ≈ 0.15 measured.
    weak = AnnoyIndex.build(vectors, track_ids, tmp_path, n_trees=1, seed=7)
    assert recall_at_k(weak, queries, vectors, K) < 0.5


def test_recall_counts_exact_neighbours_found(vectors, track_ids, tmp_path: Path) -> None:
    index = AnnoyIndex.build(vectors, track_ids, tmp_path, n_trees=10, seed=7, search_k=100_000)
    assert recall_at_k(index, vectors[:20], vectors, 1) == 1.0  # each item's nearest is itself
