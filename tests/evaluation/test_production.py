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
