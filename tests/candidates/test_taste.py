"""Taste clusters: how many mixes a user gets, and one query per well-separated group of listening."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.candidates.taste import TasteCluster, number_of_clusters, taste_clusters
from pipeline.core import schema as s
from pipeline.core.config import RerankConfig


def _genres(counts: dict[str, int]) -> pd.Series:
    return pd.Series([genre for genre, n in counts.items() for _ in range(n)], name=s.GENRE)


@pytest.mark.parametrize(
    ("counts", "n_distinct", "expected"),
    [
        ({"jazz": 40}, 30, 1),  # narrow taste: one mix
        ({"jazz": 50, "rock": 45, "pop": 5}, 30, 2),  # pop at 5% < 8%: no mix of its own
        ({"jazz": 23, "rock": 2}, 30, 2),  # 2/25 = 8% exactly: counts
        ({f"g{i}": 10 for i in range(10)}, 30, 6),  # 10 genres at 10%: capped at max_mixes
        ({"jazz": 10, "rock": 10, "pop": 10}, 2, 2),  # never more clusters than distinct tracks
        ({f"g{i}": 1 for i in range(20)}, 30, 1),  # scattered: no genre reaches 8% → still one mix
        ({}, 0, 1),
    ],
)
def test_number_of_clusters(counts: dict[str, int], n_distinct: int, expected: int, rerank_config) -> None:
    assert number_of_clusters(_genres(counts), rerank_config, n_distinct) == expected


def test_number_of_clusters_follows_max_mixes() -> None:
    genres = _genres({f"g{i}": 10 for i in range(10)})
    assert number_of_clusters(genres, RerankConfig(max_mixes=3), 100) == 3


DIM = 8
GROUPS = [  # (direction, genre of 9 tracks, mood of 9 tracks, minority genre/mood of 1 track, plays per track)
    (0, "jazz", "calm", "blues", 5),
    (1, "rock", "happy", "metal", 3),
    (2, "pop", "dark", "funk", 2),
]


@pytest.fixture
def separated(rng) -> tuple[pd.DataFrame, np.ndarray, dict[int, int]]:
    """10 tracks per group around orthogonal directions e0, e1, e2; plays 50 / 30 / 20 (weights .5 / .3 / .2).
    In each group one track carries a minority genre and mood (5% / 3% / 2% of plays, below the 8% a mix needs),
    so "dominant" is meaningful and k stays 3."""
    vectors, rows, item_row = [], [], {}
    track = 100
    for direction, genre, mood, minority, plays in GROUPS:
        for j in range(10):
            vector = np.zeros(DIM)
            vector[direction] = 1.0
            vectors.append(vector + rng.normal(0, 0.05, DIM))
            item_row[track] = len(vectors) - 1
            g, m = (minority, "angry") if j == 0 else (genre, mood)
            rows += [(track, g, m)] * plays
            track += 1
    plays = pd.DataFrame(rows, columns=[s.TRACK_ID, s.GENRE, s.MOOD])
    return plays.sample(frac=1.0, random_state=0), np.vstack(vectors) * 3.0, item_row


def test_three_separated_groups_give_three_clusters(separated, rerank_config, seed) -> None:
    plays, vectors, item_row = separated
    clusters = taste_clusters(plays, vectors, item_row, rerank_config, seed)
    assert len(clusters) == 3
    assert [c.weight for c in clusters] == pytest.approx([0.5, 0.3, 0.2])
    assert [(c.genre, c.mood) for c in clusters] == [("jazz", "calm"), ("rock", "happy"), ("pop", "dark")]
    assert [c.title for c in clusters] == ["Jazz · calm", "Rock · happy", "Pop · dark"]
    for cluster, (direction, *_rest) in zip(clusters, GROUPS, strict=True):
        assert np.linalg.norm(cluster.query) == pytest.approx(1.0)
        assert cluster.query[direction] > 0.95  # cosine with the group's unit direction


def test_clusters_are_deterministic_and_ignore_unknown_tracks(separated, rerank_config, seed) -> None:
    plays, vectors, item_row = separated
    first = taste_clusters(plays, vectors, item_row, rerank_config, seed)
    unknown = pd.DataFrame({s.TRACK_ID: [999_999] * 40, s.GENRE: "metal", s.MOOD: "angry"})
    second = taste_clusters(pd.concat([plays, unknown], ignore_index=True), vectors, item_row, rerank_config, seed)
    assert [(c.genre, c.mood, c.weight) for c in first] == [(c.genre, c.mood, c.weight) for c in second]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_allclose(a.query, b.query)


def test_narrow_listening_gives_one_cluster(separated, rerank_config, seed) -> None:
    plays, vectors, item_row = separated
    jazz_group = plays.loc[plays[s.TRACK_ID] < 110]  # 90% jazz, 10% blues: two genres ≥ 8% → two clusters
    assert len(taste_clusters(jazz_group, vectors, item_row, rerank_config, seed)) == 2
    only_jazz = jazz_group.loc[jazz_group[s.GENRE] == "jazz"]
    (cluster,) = taste_clusters(only_jazz, vectors, item_row, rerank_config, seed)
    assert cluster.weight == 1.0
    assert cluster.title == "Jazz · calm"
    assert cluster.query[0] > 0.95


def test_no_known_plays_no_clusters(separated, rerank_config, seed) -> None:
    _, vectors, item_row = separated
    plays = pd.DataFrame({s.TRACK_ID: [1, 2], s.GENRE: "jazz", s.MOOD: "calm"})
    assert taste_clusters(plays, vectors, item_row, rerank_config, seed) == []


def test_title_format() -> None:
    assert TasteCluster(np.ones(2), 1.0, "hip-hop", "energetic").title == "Hip-Hop · energetic"


def test_clusters_start_one_per_genre_so_a_smaller_genre_keeps_its_mix(rng) -> None:
    # Jazz (80% of plays) comes in two tight mood groups far apart (e0 and e1); blues (20%) sits between them but
    # closer to jazz-e0. k = 2 (two genres ≥ 8%). 2-means — even started at the two genre centroids — ends with
    # jazz-e0 + blues vs jazz-e1, leaving blues without a mix; clusters by genre give jazz and blues.
    vectors, rows, item_row = [], [], {}
    for track in range(30):
        if track < 12:
            direction, genre, plays = np.array([1.0, 0.0, 0.0]), "jazz", 6
        elif track < 24:
            direction, genre, plays = np.array([0.0, 1.0, 0.0]), "jazz", 6
        else:
            direction, genre, plays = np.array([0.8, 0.3, 0.52]), "blues", 6
        vectors.append(direction + rng.normal(0, 0.01, 3))
        item_row[track] = track
        rows += [(track, genre, "calm")] * plays
    plays = pd.DataFrame(rows, columns=[s.TRACK_ID, s.GENRE, s.MOOD])
    clusters = taste_clusters(plays, np.vstack(vectors), item_row, RerankConfig(), seed=0)
    assert [c.genre for c in clusters] == ["jazz", "blues"]
    assert [round(c.weight, 2) for c in clusters] == [0.8, 0.2]
