"""ALS embeddings: they separate what users listen to, are reproducible, and round-trip with a stable version."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.candidates.embeddings import Embeddings, fit_als, interaction_matrix
from pipeline.core import schema as s
from pipeline.core.config import RetrievalConfig

pytestmark = pytest.mark.filterwarnings("ignore:OpenBLAS is configured:RuntimeWarning")

CONFIG = RetrievalConfig(factors=8, als_iterations=10)
RANK_TWO = RetrievalConfig(factors=2, als_iterations=10)  # the rank of the two-block pattern
GROUP_A_USERS, GROUP_B_USERS = range(1, 11), range(11, 21)
GROUP_A_TRACKS, GROUP_B_TRACKS = range(100, 120), range(200, 220)


@pytest.fixture(scope="module")
def block_events() -> pd.DataFrame:
    """Two groups: users 1..10 start only tracks 100..119, users 11..20 only tracks 200..219 (12 tracks each,
    1-3 starts per track)."""
    rng = np.random.default_rng(1234)
    rows = []
    for users, tracks in ((GROUP_A_USERS, GROUP_A_TRACKS), (GROUP_B_USERS, GROUP_B_TRACKS)):
        for user in users:
            for track in rng.choice(list(tracks), size=12, replace=False):
                rows += [(user, int(track))] * int(rng.integers(1, 4))
    return pd.DataFrame(rows, columns=[s.USER_ID, s.TRACK_ID])


@pytest.fixture(scope="module")
def embeddings(block_events: pd.DataFrame) -> Embeddings:
    return fit_als(block_events, CONFIG, seed=7)


def test_interaction_matrix_counts_starts() -> None:
    events = pd.DataFrame({s.USER_ID: [5, 5, 5, 9], s.TRACK_ID: [30, 30, 10, 10]})
    matrix, users, tracks = interaction_matrix(events)
    assert users.tolist() == [5, 9] and tracks.tolist() == [10, 30]
    assert matrix.toarray().tolist() == [[1.0, 2.0], [1.0, 0.0]]


def test_shapes_and_ids(embeddings: Embeddings) -> None:
    assert embeddings.user_ids.tolist() == [*GROUP_A_USERS, *GROUP_B_USERS]
    assert embeddings.track_ids.tolist() == [*GROUP_A_TRACKS, *GROUP_B_TRACKS]
    assert embeddings.user_factors.shape == (20, CONFIG.factors)
    assert embeddings.item_factors.shape == (40, CONFIG.factors)
    assert embeddings.user_row[11] == 10 and embeddings.item_row[200] == 20


def _own_and_other(embeddings: Embeddings, user: int) -> tuple[slice, slice]:
    """Columns (tracks in id order) of the user's own group and of the other group."""
    group_a, group_b = slice(0, 20), slice(20, 40)
    return (group_a, group_b) if user in GROUP_A_USERS else (group_b, group_a)


def test_every_user_scores_every_own_group_track_above_the_other_group(block_events) -> None:
    embeddings = fit_als(block_events, RANK_TWO, seed=7)
    scores = embeddings.user_factors @ embeddings.item_factors.T
    for row, user in enumerate(embeddings.user_ids):
        own, other = _own_and_other(embeddings, int(user))
        assert scores[row, own].min() > scores[row, other].max(), f"user {user}"


def test_with_more_factors_heard_tracks_still_beat_the_other_group(block_events, embeddings) -> None:
    scores = embeddings.user_factors @ embeddings.item_factors.T
    for row, user in enumerate(embeddings.user_ids):
        own, other = _own_and_other(embeddings, int(user))
        heard = [embeddings.item_row[t] for t in block_events.loc[block_events[s.USER_ID] == user, s.TRACK_ID]]
        assert scores[row, heard].min() > scores[row, other].max(), f"user {user}"
        assert scores[row, own].mean() > scores[row, other].mean() + 0.3, f"user {user}"


def test_same_seed_same_factors_other_seed_other_factors(block_events, embeddings) -> None:
    again = fit_als(block_events, CONFIG, seed=7)
    np.testing.assert_array_equal(again.user_factors, embeddings.user_factors)
    np.testing.assert_array_equal(again.item_factors, embeddings.item_factors)
    assert again.version() == embeddings.version()
    other = fit_als(block_events, CONFIG, seed=8)
    assert not np.array_equal(other.item_factors, embeddings.item_factors)
    assert other.version() != embeddings.version()


def test_save_load_round_trip(tmp_path: Path, embeddings: Embeddings) -> None:
    path = embeddings.save(tmp_path / "emb")
    assert path == tmp_path / "emb" / "embeddings.npz"
    for source in (path, path.parent):  # the file or its directory
        loaded = Embeddings.load(source)
        for name in ("user_ids", "track_ids", "user_factors", "item_factors"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(embeddings, name))
            assert getattr(loaded, name).dtype == getattr(embeddings, name).dtype
        assert loaded.version() == embeddings.version()


def test_version_changes_with_content(embeddings: Embeddings) -> None:
    version = embeddings.version()
    assert len(version) == 12 and version == embeddings.version()
    nudged = embeddings.item_factors.copy()
    nudged[3, 0] += 1e-3
    assert replace(embeddings, item_factors=nudged).version() != version
    renumbered = embeddings.track_ids.copy()
    renumbered[0] = 999
    assert replace(embeddings, track_ids=renumbered).version() != version


def test_lookup_is_what_pair_features_takes(embeddings: Embeddings) -> None:
    user_factors, item_factors, user_row, item_row = embeddings.lookup()
    assert user_factors is embeddings.user_factors and item_factors is embeddings.item_factors
    assert user_row == {u: i for i, u in enumerate(range(1, 21))}
    assert item_row[100] == 0 and item_row[219] == 39
