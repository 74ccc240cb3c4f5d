"""Ranker inputs for a block of users at once: one feature build for every (user, distinct candidate).

The online feature rows of the shard's users and of every catalog track become `PairFeatureTables` once per
shard; each block picks its rows from them by position. The features are the one definition training also
uses (`pair_features` is the same two steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.candidates.embeddings import Embeddings
from pipeline.core import schema as s
from pipeline.core.columns import Columns
from pipeline.features.definitions import TRACK_ROW, USER_ROW, PairFeatureTables


@dataclass
class RankerInputs:
    """Builds ranker inputs from online feature rows: `users` (user_profile, one row per shard user) and `tracks`
    (track_stats, one row per catalog track)."""

    day: str
    catalog: pd.DataFrame
    embeddings: Embeddings
    users: pd.DataFrame
    tracks: pd.DataFrame

    def __post_init__(self) -> None:
        self.track_row = pd.Series(np.arange(len(self.tracks)), index=self.tracks[s.TRACK_ID].to_numpy())
        self.user_row = pd.Series(np.arange(len(self.users)), index=self.users[s.USER_ID].to_numpy())
        self.tables = PairFeatureTables.build(self.users, self.tracks, self.catalog, self.embeddings.lookup(), self.day)

    def genre_affinity(self, user: int) -> np.ndarray | None:
        """The user's online genre affinity vector, or None when the user has no profile."""
        row = self.user_row.get(user)
        return self.users["genre_affinity"].iloc[row] if row is not None else None

    def block(self, work: list[tuple[int, Columns]]) -> tuple[pd.DataFrame, list[np.ndarray]]:
        """Ranker inputs for every (user, distinct candidate) of `work` in one feature build, and per user
        the feature row of each of its candidates (a track several clusters retrieved is scored once)."""
        users, tracks, known, rows, offset = [], [], [], [], 0
        for user, candidates in work:
            distinct, first, codes = np.unique(candidates[s.TRACK_ID], return_index=True, return_inverse=True)
            users.append(np.full(len(distinct), user, dtype=np.int64))
            tracks.append(distinct)
            known.append(~candidates[s.DISCOVERY][first])
            rows.append(codes + offset)
            offset += len(distinct)
        block_users, block_tracks = np.concatenate(users), np.concatenate(tracks)
        block = pd.DataFrame({
            s.USER_ID: block_users, s.TRACK_ID: block_tracks, "known": np.concatenate(known),
            USER_ROW: self.user_row.reindex(block_users).fillna(-1).to_numpy(dtype=np.int64),
            TRACK_ROW: self.track_row.reindex(block_tracks).to_numpy(),
        })
        return self.tables.features(block), rows

    def for_user(self, user: int, candidates: Columns) -> pd.DataFrame:
        """Ranker inputs of one user's candidates, a row per candidate."""
        features, (rows,) = self.block([(user, candidates)])
        return features.iloc[rows].reset_index(drop=True)
