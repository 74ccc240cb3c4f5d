"""Listeners' tastes that move: the simulator's ground truth, which the platform never reads.

Expressed affinity of a user for a track = latent affinity × the user's familiarity with the track's genre.
Latent affinity is the world's taste score (`world.true_affinity`'s formula on the user's current genre weights)
or, for a genre outside those weights, a drawn latent affinity: liked (~U(0.5, 0.9)) with probability
`latent_like_prob`, otherwise low (~U(0, 0.2)). Familiarity starts at 1 for taste genres and at
`unfamiliar_familiarity` for the rest; every completed play raises it, every week without one fades it back.
Once a week the genre weights drift (`habit_rate`, zero-sum) toward the shares of what the user completed.
Sources of each rule and default: `ListenerConfig`'s field descriptions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import ListenerConfig
from pipeline.sim.world import GENRE_SHARE_IN_AFFINITY, GENRES, MOODS, World, locate

LIKED_RANGE = (0.5, 0.9)  # latent affinity of a latent-liked genre
LOW_RANGE = (0.0, 0.2)  # latent affinity of any other genre outside the taste


class MovingTastes:
    """Per (user, genre) state of every listener: genre weights, latent affinities, familiarity; dense arrays."""

    def __init__(self, world: World, config: ListenerConfig, seed: int) -> None:
        self.config = config
        self.users = pd.Index(world.users[s.USER_ID].to_numpy())
        self.tracks = pd.Index(world.catalog[s.TRACK_ID].to_numpy())
        self.track_genre = pd.Index(GENRES).get_indexer(world.catalog[s.GENRE].to_numpy())
        self.track_mood = pd.Index(MOODS).get_indexer(world.catalog[s.MOOD].to_numpy())
        self.popularity = world.catalog[s.POPULARITY].to_numpy(dtype=float)
        n_users, n_genres = len(self.users), int(self.track_genre.max()) + 1
        self.genre_onehot = np.eye(n_genres)[self.track_genre]  # (tracks, genres)
        self.weight, self.mood_share = _taste_arrays(world.tastes, self.users, n_genres)
        taste = self.weight > 0
        rng = np.random.default_rng([seed, 19])
        liked = (rng.random((n_users, n_genres)) < config.latent_like_prob) & ~taste
        drawn = np.where(liked, rng.uniform(*LIKED_RANGE, (n_users, n_genres)),
                         rng.uniform(*LOW_RANGE, (n_users, n_genres)))
        self.hidden = np.where(taste, 0.0, drawn)  # latent affinity of genres outside the weights
        self.latent_liked = liked
        self.familiarity = np.where(taste, 1.0, config.unfamiliar_familiarity)
        self.week_completed = np.zeros((n_users, n_genres))

    # ---------------------------------------------------------------------------------------------------------
    # Affinity
    # ---------------------------------------------------------------------------------------------------------

    def rows(self, user_ids: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row positions of users and tracks; KeyError naming the first unknown ids."""
        return locate(self.users, np.asarray(user_ids), "user"), locate(self.tracks, np.asarray(track_ids), "track")

    def latent(self, user_rows: np.ndarray, track_rows: np.ndarray) -> np.ndarray:
        """Latent affinity in [0, 1]: the taste score on the current weights, or the genre's drawn affinity."""
        genre, mood = self.track_genre[track_rows], self.track_mood[track_rows]
        weight = self.weight[user_rows, genre]
        cell = weight * self.mood_share[user_rows, genre, mood]
        score = (GENRE_SHARE_IN_AFFINITY * weight + (1 - GENRE_SHARE_IN_AFFINITY) * cell) / self._norm()[user_rows]
        return np.clip(np.maximum(score, self.hidden[user_rows, genre]), 0.0, 1.0)

    def expressed(self, user_rows: np.ndarray, track_rows: np.ndarray) -> np.ndarray:
        """What the listener feels now: latent affinity × familiarity with the track's genre."""
        return self.latent(user_rows, track_rows) * self.familiarity[user_rows, self.track_genre[track_rows]]

    def expressed_for(self, user_ids: np.ndarray, track_ids: np.ndarray) -> np.ndarray:
        return self.expressed(*self.rows(user_ids, track_ids))

    def _norm(self) -> np.ndarray:
        """Per user: the taste score of their best (genre, mood) cell, so that cell scores 1."""
        scores = (GENRE_SHARE_IN_AFFINITY * self.weight[:, :, None]
                  + (1 - GENRE_SHARE_IN_AFFINITY) * self.weight[:, :, None] * self.mood_share)
        best = scores.max(axis=(1, 2))
        return np.where(best > 0, best, 1.0)

    # ---------------------------------------------------------------------------------------------------------
    # Organic choice
    # ---------------------------------------------------------------------------------------------------------

    def organic_tracks(self, rng: np.random.Generator, user_rows: np.ndarray) -> np.ndarray:
        """Track rows the users pick themselves: a genre in proportion to weight × familiarity, then a track of it
        by popularity within the user's moods of that genre."""
        if not len(user_rows):
            return np.zeros(0, dtype=np.int64)
        unique, inverse = np.unique(user_rows, return_inverse=True)
        cumulative = np.cumsum(self._organic_track_weights(unique), axis=1)
        target = rng.random(len(user_rows)) * cumulative[inverse, -1]
        picked = (cumulative[inverse] <= target[:, None]).sum(axis=1)
        return np.minimum(picked, len(self.tracks) - 1)

    def _organic_track_weights(self, user_rows: np.ndarray) -> np.ndarray:
        genre, mood = self.track_genre, self.track_mood
        in_cell = self.mood_share[user_rows][:, genre, mood] * self.popularity  # (users, tracks)
        genre_mass = in_cell @ self.genre_onehot  # (users, genres): each genre's in-cell mass
        preference = self.weight[user_rows] * self.familiarity[user_rows]
        share = np.divide(preference, genre_mass, out=np.zeros_like(preference), where=genre_mass > 0)
        return in_cell * share[:, genre]

    # ---------------------------------------------------------------------------------------------------------
    # Change
    # ---------------------------------------------------------------------------------------------------------

    def completed(self, user_rows: np.ndarray, track_rows: np.ndarray) -> None:
        """Completed plays raise familiarity with their genre (one step per play) and count toward this week's habit."""
        counts = np.zeros_like(self.week_completed)
        np.add.at(counts, (user_rows, self.track_genre[track_rows]), 1.0)
        self.familiarity = 1.0 - (1.0 - self.familiarity) * (1.0 - self.config.familiarity_gain) ** counts
        self.week_completed += counts

    def end_week(self) -> None:
        """Familiarity of genres not completed this week fades toward φ; weights drift toward the week's shares."""
        config = self.config
        idle = self.week_completed == 0
        fade = config.familiarity_decay * (self.familiarity - config.unfamiliar_familiarity)
        self.familiarity = np.where(idle, self.familiarity - fade, self.familiarity)
        total = self.week_completed.sum(axis=1, keepdims=True)
        share = np.divide(self.week_completed, total, out=self.weight.copy(), where=total > 0)
        self.weight = (1 - config.habit_rate) * self.weight + config.habit_rate * share
        self.week_completed = np.zeros_like(self.week_completed)


def _taste_arrays(tastes: pd.DataFrame, users: pd.Index, n_genres: int) -> tuple[np.ndarray, np.ndarray]:
    """Genre weights (users × genres, rows sum to 1) and each genre's mood shares (uniform where no weight)."""
    cells = np.zeros((len(users), n_genres, len(MOODS)))
    rows = locate(users, tastes[s.USER_ID].to_numpy(), "user")
    genre = pd.Index(GENRES).get_indexer(tastes[s.GENRE].to_numpy())
    mood = pd.Index(MOODS).get_indexer(tastes[s.MOOD].to_numpy())
    np.add.at(cells, (rows, genre, mood), tastes[s.WEIGHT].to_numpy())
    weight = cells.sum(axis=2)
    uniform = np.full_like(cells, 1.0 / len(MOODS))
    mood_share = np.divide(cells, weight[:, :, None], out=uniform, where=weight[:, :, None] > 0)
    return weight, mood_share

