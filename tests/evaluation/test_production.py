"""The production stages on an offline split: the pieces that adapt a split to them, with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from pipeline.core import schema as s
from pipeline.evaluation import production as pr


def test_best_unheard_skips_the_excluded_and_orders_best_first() -> None:
    scores = np.array([0.5, 0.9, 0.1, 0.7, 0.3])
    assert pr.best_unheard(scores, np.array([1]), 3).tolist() == [3, 0, 4]
    assert pr.best_unheard(scores, np.array([0, 1, 2, 3]), 3).tolist() == [4]  # fewer left than asked
    assert pr.best_unheard(scores, np.arange(5), 3).tolist() == []


def test_source_features_rank_within_each_user() -> None:
    features = pd.DataFrame({"known": [0.0, 0.0, 0.0, 0.0]})
    users, items = np.array([7, 7, 7, 9]), np.array([0, 1, 2, 0])
    scores = np.array([[0.0, 0.0, 0.0]] * 7 + [[0.2, 0.9, 0.5]] + [[0.0, 0.0, 0.0]] + [[0.4, 0.0, 0.0]])
    out = pr.with_source_features(features, {"ease": scores}, users, items)
    assert list(out.columns) == ["known", "source_ease_score", "source_ease_rank"]
    assert out["source_ease_score"].tolist() == [0.2, 0.9, 0.5, 0.4]
    assert out["source_ease_rank"].tolist() == [3.0, 1.0, 2.0, 1.0]


def test_familiar_candidates_are_ranked_apart_from_new_ones() -> None:
    features = pd.DataFrame({"known": [1.0, 0.0, 1.0, 0.0]})
    users, items = np.array([0, 0, 0, 0]), np.array([0, 1, 2, 3])
    scores = np.array([[0.9, 0.5, 0.8, 0.1]])
    out = pr.with_source_features(features, {"als": scores}, users, items)
    # the new candidates 1 and 3 are first and second among the new ones, whatever the familiar ones score
    assert out["source_als_rank"].tolist() == [1.0, 1.0, 2.0, 2.0]


def test_source_ranks_beyond_the_cap_are_one_value() -> None:
    n = pr.RANK_CAP + 50
    features = pd.DataFrame({"known": np.zeros(n)})
    scores = -np.arange(n, dtype=np.float64)[None, :]  # item i is the (i + 1)-th best
    out = pr.with_source_features(features, {"als": scores}, np.zeros(n, dtype=np.int64), np.arange(n))
    rank = out["source_als_rank"].to_numpy()
    assert rank[: pr.RANK_CAP].tolist() == list(range(1, pr.RANK_CAP + 1))
    assert set(rank[pr.RANK_CAP:].tolist()) == {float(pr.RANK_CAP)}


def test_completed_plays_are_one_unskipped_play_per_training_pair() -> None:
    train = csr_matrix(np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32))
    events = pr.completed_plays(train)
    assert list(zip(events[s.USER_ID], events[s.TRACK_ID], strict=True)) == [(0, 0), (0, 2), (1, 1)]
    assert not events[s.SKIPPED].any()
    assert (events[s.TS] == pd.Timestamp(pr.DAY, tz="UTC")).all()


def test_offline_catalog_rows_are_items() -> None:
    catalog = pr.offline_catalog(np.array(["jazz", "rock"]), np.array([1, 0, 1]), np.array([3.0, 1.0, 0.0]))
    assert list(catalog.columns) == list(s.CATALOG_COLUMNS)
    assert catalog[s.TRACK_ID].tolist() == catalog[s.ARTIST_ID].tolist() == [0, 1, 2]
    assert catalog[s.GENRE].tolist() == ["rock", "jazz", "rock"]
    assert catalog[s.POPULARITY].tolist() == [0.75, 0.25, 0.0]
