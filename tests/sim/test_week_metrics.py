"""Known answers for the simulator's per-week keys: completed plays and genres with a mix, per user of the world."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.sim.loop import completed_plays_per_user, genres_with_mix_per_user


def test_completed_plays_count_every_unskipped_start_per_world_user() -> None:
    events = pd.DataFrame({"user_id": [0, 0, 1, 1, 1], "skipped": [False, True, False, False, True]})
    assert completed_plays_per_user(events, n_users=4) == pytest.approx(3 / 4)
    assert completed_plays_per_user(events.iloc[0:0], n_users=4) == 0.0


def test_genres_with_a_mix_count_each_mixs_main_genre_once_per_user() -> None:
    # user 0: two rock mixes (one with a jazz stray) and a pop mix → 2 genres; user 1: one jazz mix → 1; users 2-3: none
    slots = pd.DataFrame({
        "user_id": [0, 0, 0, 0, 0, 0, 1, 1],
        "mix_index": [0, 0, 0, 1, 1, 2, 0, 0],
        "genre": ["rock", "rock", "jazz", "rock", "rock", "pop", "jazz", "jazz"],
    })
    assert genres_with_mix_per_user(slots, n_users=4) == pytest.approx(3 / 4)
    assert genres_with_mix_per_user(slots.iloc[0:0], n_users=4) == 0.0
