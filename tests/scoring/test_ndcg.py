"""NDCG@k of the retrain's holdout: limits and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.scoring.ranker import ndcg_at_k


def test_perfect_and_reversed_order() -> None:
    label = np.array([1, 0, 0, 1, 0])
    group = np.zeros(5)
    assert ndcg_at_k(label, label + 0.1 * np.arange(5), group) == pytest.approx(1.0)
    # Worst order: the positives at ranks 4 and 5 → (1/log2(5) + 1/log2(6)) / (1 + 1/log2(3)).
    worst = np.array([0.1, 0.5, 0.4, 0.3, 0.9])
    expected = (1 / np.log2(5) + 1 / np.log2(6)) / (1 + 1 / np.log2(3))
    assert ndcg_at_k(label, worst, group) == pytest.approx(expected)


def test_groups_without_positives_are_skipped_and_k_cuts() -> None:
    label = np.array([0, 0, 1, 0, 1])
    score = np.array([0.9, 0.8, 0.1, 0.9, 0.2])
    group = np.array(["a", "a", "b", "b", "b"])  # a has no positive; b's positives rank 2 and 3
    assert ndcg_at_k(label, score, group, k=1) == 0.0
    ideal = 1 + 1 / np.log2(3)
    assert ndcg_at_k(label, score, group, k=10) == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal)
    assert np.isnan(ndcg_at_k(np.zeros(3), np.ones(3), np.zeros(3)))
