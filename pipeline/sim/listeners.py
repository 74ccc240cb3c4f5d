"""Simulated listeners: turn a day's published mixes into that day's play events.

The world's ground truth decides: the base skip probability of a slot is the world's own
`skip_probability(true_affinity)` (the same model that generated the organic history), shifted by
where the slot sits in its mix, whether the listener already knows the track, and fatigue from
hearing it recently. Events come out in the normal event schema (mix_id, position, policy and
propensity copied from the slot) and are landed for the normal ingest. Draws come from a generator
seeded by (seed, day), so the same inputs always give the same events. Never imports Airflow.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import ListenerConfig
from pipeline.sim.world import N_PLAYS_PER_DAY, World, ms_played_for, skip_probability, start_offsets, true_affinity

_SKIP_FLOOR, _SKIP_CEILING = 0.02, 0.98


def play_probability(
    affinity: np.ndarray,
    position: np.ndarray,
    mix_length: np.ndarray,
    known: np.ndarray,
    recent_starts: np.ndarray,
    config: ListenerConfig,
) -> np.ndarray:
    """P(play without skip) of each slot start.

    skip = world skip(affinity) + position_penalty * position / (length - 1)
           - familiarity_bonus (known) or + novelty_penalty (new) + min(fatigue_per_play * recent, fatigue_cap),
    clipped to [0.02, 0.98].
    """
    depth = np.asarray(position, dtype=float) / np.maximum(np.asarray(mix_length, dtype=float) - 1, 1)
    familiarity = np.where(np.asarray(known, dtype=bool), -config.familiarity_bonus, config.novelty_penalty)
    fatigue = np.minimum(config.fatigue_per_play * np.asarray(recent_starts, dtype=float), config.fatigue_cap)
    skip = skip_probability(np.asarray(affinity, dtype=float)) + config.position_penalty * depth + familiarity + fatigue
    return 1.0 - np.clip(skip, _SKIP_FLOOR, _SKIP_CEILING)


class Listeners:
    """All simulated users. Remembers what they heard, for familiarity and fatigue across days."""

    def __init__(self, world: World, config: ListenerConfig, seed: int) -> None:
        self.world = world
        self.config = config
        self.seed = seed
        self.activity = world.users.set_index(s.USER_ID)[N_PLAYS_PER_DAY]
        self.heard: set[tuple[int, int]] = set()  # (user, track) started at least once in the simulation
        self.recent: deque[pd.DataFrame] = deque(maxlen=config.fatigue_days)  # last days' (user, track) starts

    def listen(self, slots: pd.DataFrame, day: str, skip_shift: float = 0.0) -> pd.DataFrame:
        """The day's events for the published `slots`; `skip_shift` adds to every skip probability (tests, drills).

        Per user: starts ~ Poisson(the user's plays per day); sessions pick one of the user's mixes (favouring
        the ones they like, `mix_preference`) and play it from position 0 for ~Geometric(session_tracks) starts,
        until the day's starts are used.
        """
        rng = np.random.default_rng([self.seed, int(day.replace("-", ""))])
        starts = self._sessions(rng, slots)
        if starts.empty:
            events = _events(starts, np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0, np.int64), day)
            self._remember(events)
            return events
        users = starts[s.USER_ID].to_numpy()
        tracks = starts[s.TRACK_ID].to_numpy()
        known = ~starts[s.DISCOVERY].to_numpy(bool) | self._heard_before(users, tracks)
        p_play = play_probability(
            true_affinity(self.world.tastes, self.world.catalog, users, tracks),
            starts[s.POSITION].to_numpy(), starts["mix_length"].to_numpy(), known, self._recent_starts(starts),
            self.config,
        )
        skipped = rng.random(len(starts)) >= np.clip(p_play - skip_shift, 0.0, 1.0)
        duration = self.world.catalog.set_index(s.TRACK_ID)[s.DURATION_MS].reindex(tracks).to_numpy()
        ms_played = ms_played_for(rng, duration, skipped)
        user_rows = pd.factorize(users, sort=True)[0]
        offsets = start_offsets(rng, user_rows, ms_played)
        events = _events(starts, skipped, ms_played, offsets, day)
        self._remember(events)
        return events

    def _sessions(self, rng: np.random.Generator, slots: pd.DataFrame) -> pd.DataFrame:
        """The slots each user starts today, in play order (users ascending)."""
        if slots.empty:
            return slots.assign(mix_length=pd.Series(dtype="int64"))
        slots = slots.sort_values([s.USER_ID, s.MIX_INDEX, s.POSITION], kind="stable")
        lengths = slots.groupby([s.USER_ID, s.MIX_INDEX])[s.POSITION].transform("size")
        slots = slots.assign(mix_length=lengths.to_numpy())
        liking = self._mix_liking(slots)
        picked = []
        for user, mine in slots.groupby(s.USER_ID, sort=True):
            budget = int(rng.poisson(self.activity.get(user, 0.0)))
            mixes = [group for _, group in mine.groupby(s.MIX_INDEX, sort=True)]
            choice = liking.loc[user].to_numpy() ** self.config.mix_preference
            choice = choice / choice.sum()
            while budget > 0:
                mix = mixes[int(rng.choice(len(mixes), p=choice))]
                take = min(budget, int(rng.geometric(1.0 / self.config.session_tracks)), len(mix))
                picked.append(mix.iloc[:take])
                budget -= take
        return pd.concat(picked, ignore_index=True) if picked else slots.iloc[0:0]

    def _mix_liking(self, slots: pd.DataFrame) -> pd.Series:
        """Per (user, mix_index): the listener's mean true affinity over the mix's first `session_tracks` slots
        (what a session mostly hears), plus 0.05 so that no mix is never chosen."""
        head = slots.loc[slots[s.POSITION] < self.config.session_tracks]
        affinity = true_affinity(self.world.tastes, self.world.catalog, head[s.USER_ID].to_numpy(),
                                 head[s.TRACK_ID].to_numpy())
        return pd.Series(affinity, index=pd.MultiIndex.from_frame(head[[s.USER_ID, s.MIX_INDEX]])).groupby(
            level=[0, 1], sort=True).mean() + 0.05

    def _heard_before(self, users: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        return np.fromiter(((int(u), int(t)) in self.heard for u, t in zip(users, tracks, strict=True)), bool,
                           len(users))

    def _recent_starts(self, starts: pd.DataFrame) -> np.ndarray:
        """Starts of the same (user, track) in the previous `fatigue_days` simulated days."""
        if not self.recent:
            return np.zeros(len(starts))
        counts = pd.concat(list(self.recent)).value_counts([s.USER_ID, s.TRACK_ID]).rename("recent")
        keyed = starts[[s.USER_ID, s.TRACK_ID]].merge(counts.reset_index(), on=[s.USER_ID, s.TRACK_ID], how="left")
        return keyed["recent"].fillna(0).to_numpy(dtype=float)

    def _remember(self, events: pd.DataFrame) -> None:
        pairs = events[[s.USER_ID, s.TRACK_ID]].astype("int64")
        self.recent.append(pairs)
        self.heard.update(zip(pairs[s.USER_ID].tolist(), pairs[s.TRACK_ID].tolist(), strict=True))


def _events(starts: pd.DataFrame, skipped: np.ndarray, ms_played: np.ndarray, offsets: np.ndarray,
            day: str) -> pd.DataFrame:
    """Starts as events in the normal schema, sorted like the world's history (ts, user_id, track_id)."""
    ts = pd.to_datetime(pd.Timestamp(day, tz="UTC").value + np.asarray(offsets, dtype=np.int64) * 1_000_000, utc=True)
    events = pd.DataFrame({
        s.USER_ID: starts[s.USER_ID].to_numpy(dtype=np.int64),
        s.TRACK_ID: starts[s.TRACK_ID].to_numpy(dtype=np.int64),
        s.TS: ts,
        s.MS_PLAYED: np.asarray(ms_played, dtype=np.int64),
        s.SKIPPED: np.asarray(skipped, dtype=bool),
        s.MIX_ID: starts[s.MIX_ID].astype("string").to_numpy() if len(starts) else pd.array([], dtype="string"),
        s.POSITION: starts[s.POSITION].to_numpy(dtype=np.int64),
        s.POLICY: starts[s.POLICY].astype("string").to_numpy() if len(starts) else pd.array([], dtype="string"),
        s.PROPENSITY: starts[s.PROPENSITY].to_numpy(dtype=float),
    }).astype(s.EVENT_DTYPES)
    return events.sort_values([s.TS, s.USER_ID, s.TRACK_ID], kind="stable").reset_index(drop=True)
