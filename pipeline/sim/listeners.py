"""Simulated listeners: turn a day's published mixes into that day's play events, and let their tastes move.

Each user starts ~Poisson(their plays per day) tracks a day. A share (`organic_share`) they pick themselves from
their expressed tastes (organic events, no mix id); the rest are sessions on their mixes, each session choosing a
mix by a logit on how much the listener expects to like it and playing it from the top. Every start, organic or
from a mix, is skipped by the same law: the world's `skip_probability` of the listener's *expressed* affinity
(`pipeline.sim.tastes`), shifted by where the slot sits in its mix, whether the listener already knows the track,
fatigue from hearing it recently and satiation with its genre that day. Completed plays raise familiarity;
`end_week` lets familiarity fade and habits drift. Events come out in the normal event schema and are landed for
the normal ingest. Draws come from a generator seeded by (seed, day), so the same inputs give the same events.
Never imports Airflow.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import ListenerConfig
from pipeline.sim.tastes import MovingTastes
from pipeline.sim.world import N_PLAYS_PER_DAY, World, ms_played_for, skip_probability, start_offsets

_SKIP_FLOOR, _SKIP_CEILING = 0.02, 0.98


def play_probability(
    affinity: np.ndarray,
    position: np.ndarray,
    mix_length: np.ndarray,
    known: np.ndarray,
    recent_starts: np.ndarray,
    config: ListenerConfig,
    same_genre_before: np.ndarray | None = None,
) -> np.ndarray:
    """P(play without skip) of each start.

    skip = world skip(affinity) + position_penalty * position / (length - 1)
           - familiarity_bonus (known) or + novelty_penalty (new) + min(fatigue_per_play * recent, fatigue_cap)
           + min(satiation_per_play * same_genre_before, fatigue_cap),
    clipped to [0.02, 0.98].
    """
    depth = np.asarray(position, dtype=float) / np.maximum(np.asarray(mix_length, dtype=float) - 1, 1)
    familiarity = np.where(np.asarray(known, dtype=bool), -config.familiarity_bonus, config.novelty_penalty)
    fatigue = np.minimum(config.fatigue_per_play * np.asarray(recent_starts, dtype=float), config.fatigue_cap)
    satiation = 0.0 if same_genre_before is None else np.minimum(
        config.satiation_per_play * np.asarray(same_genre_before, dtype=float), config.fatigue_cap)
    skip = (skip_probability(np.asarray(affinity, dtype=float)) + config.position_penalty * depth + familiarity
            + fatigue + satiation)
    return 1.0 - np.clip(skip, _SKIP_FLOOR, _SKIP_CEILING)


@dataclass(frozen=True)
class _Starts:
    """One day's track starts, users ascending and in play order; slot fields are empty for organic starts."""

    user: np.ndarray  # user rows
    track: np.ndarray  # track rows
    slot: np.ndarray  # row in the day's sorted slots, -1 for an organic start


class Listeners:
    """All simulated users: their moving tastes and what they heard (for familiarity and fatigue across days).

    `world` is the world as the listeners know it: plays of latent-liked genres are removed from its history
    (the user has not discovered them). Land this one, not the generated world.
    """

    def __init__(self, world: World, config: ListenerConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.tastes = MovingTastes(world, config, seed)
        self.world = replace(world, events=self._discovered(world.events))
        self.activity = world.users[N_PLAYS_PER_DAY].to_numpy(dtype=float)
        self.duration = world.catalog[s.DURATION_MS].to_numpy()
        shape = (len(self.tastes.users), len(self.tastes.tracks))
        self.heard = np.zeros(shape, dtype=bool)  # (user, track) started at least once, history included
        self.heard[self.tastes.rows(self.world.events[s.USER_ID], self.world.events[s.TRACK_ID])] = True
        self.recent = np.zeros(shape, dtype=np.int32)  # starts in the last `fatigue_days` days
        self.recent_days: deque[tuple[np.ndarray, np.ndarray]] = deque()

    def expressed_affinity(self, user_ids: np.ndarray, track_ids: np.ndarray) -> np.ndarray:
        """Ground truth now: how much each user likes each track (latent affinity × familiarity)."""
        return self.tastes.expressed_for(user_ids, track_ids)

    def listen(self, slots: pd.DataFrame, day: str, skip_shift: float = 0.0) -> pd.DataFrame:
        """The day's events for the published `slots`; `skip_shift` adds to every skip probability (tests, drills)."""
        rng = np.random.default_rng([self.seed, int(day.replace("-", ""))])
        slots = self._sorted_slots(slots)
        starts = self._starts(rng, slots)
        is_slot = starts.slot >= 0
        slot_rows = np.where(is_slot, starts.slot, 0)
        position = np.where(is_slot, slots[s.POSITION].to_numpy(dtype=np.int64)[slot_rows] if len(slots) else 0, 0)
        length = np.where(is_slot, slots["mix_length"].to_numpy()[slot_rows] if len(slots) else 1, 1)
        discovery = is_slot & (slots[s.DISCOVERY].to_numpy(bool)[slot_rows] if len(slots) else False)
        known = (is_slot & ~discovery) | self.heard[starts.user, starts.track]
        p_play = play_probability(self.tastes.expressed(starts.user, starts.track), position, length, known,
                                  self.recent[starts.user, starts.track], self.config, self._same_genre_before(starts))
        skipped = rng.random(len(starts.user)) >= np.clip(p_play - skip_shift, 0.0, 1.0)
        ms_played = ms_played_for(rng, self.duration[starts.track], skipped)
        offsets = start_offsets(rng, starts.user, ms_played)
        events = self._events(starts, slots, skipped, ms_played, offsets, day)
        self._remember(starts, skipped)
        return events

    def end_week(self) -> None:
        """A simulated week is over: familiarity fades where nothing was completed, habits drift."""
        self.tastes.end_week()

    # ---------------------------------------------------------------------------------------------------------
    # Who plays what
    # ---------------------------------------------------------------------------------------------------------

    def _discovered(self, events: pd.DataFrame) -> pd.DataFrame:
        """History without the plays of genres the user has yet to discover (their latent-liked genres)."""
        if events.empty:
            return events
        users, tracks = self.tastes.rows(events[s.USER_ID].to_numpy(), events[s.TRACK_ID].to_numpy())
        hidden = self.tastes.latent_liked[users, self.tastes.track_genre[tracks]]
        return events.loc[~hidden].reset_index(drop=True)

    def _sorted_slots(self, slots: pd.DataFrame) -> pd.DataFrame:
        """Slots by (user, mix, position), with each slot's mix length and the rows of its user and track."""
        slots = slots.sort_values([s.USER_ID, s.MIX_INDEX, s.POSITION], kind="stable").reset_index(drop=True)
        lengths = slots.groupby([s.USER_ID, s.MIX_INDEX])[s.POSITION].transform("size")
        user_rows, track_rows = self.tastes.rows(slots[s.USER_ID].to_numpy(), slots[s.TRACK_ID].to_numpy())
        return slots.assign(mix_length=lengths.to_numpy(dtype=np.int64), user_row=user_rows, track_row=track_rows)

    def _starts(self, rng: np.random.Generator, slots: pd.DataFrame) -> _Starts:
        """Per user (ascending): today's mix sessions, then their organic starts."""
        budget = rng.poisson(self.activity)
        organic = rng.binomial(budget, self.config.organic_share)
        sessions = self._session_slots(rng, slots, budget - organic)
        organic_users = np.repeat(np.arange(len(budget)), organic)
        organic_tracks = self.tastes.organic_tracks(rng, organic_users)
        session_users = slots["user_row"].to_numpy()[sessions] if len(sessions) else np.zeros(0, np.int64)
        session_tracks = slots["track_row"].to_numpy()[sessions] if len(sessions) else np.zeros(0, np.int64)
        user = np.r_[session_users, organic_users].astype(np.int64)
        order = np.argsort(user, kind="stable")
        return _Starts(user=user[order], track=np.r_[session_tracks, organic_tracks].astype(np.int64)[order],
                       slot=np.r_[sessions, np.full(len(organic_users), -1)].astype(np.int64)[order])

    def _session_slots(self, rng: np.random.Generator, slots: pd.DataFrame, budget: np.ndarray) -> np.ndarray:
        """Rows of the slots each user starts in their sessions today, users ascending, in play order.

        A session picks mix m with probability ∝ exp(mix_preference × the listener's mean expressed affinity over
        m's first `session_tracks` slots) and plays ~Geometric(session_tracks) of it from the top.
        """
        if slots.empty:
            return np.zeros(0, dtype=np.int64)
        mixes = slots.groupby(["user_row", s.MIX_INDEX], sort=True)
        first = mixes.indices  # (user_row, mix_index) → slot rows, already in position order
        liking = self._mix_liking(slots)
        picked: list[np.ndarray] = []
        for user_row, keys in _keys_by_user(list(first)):
            left = int(budget[user_row])
            logits = self.config.mix_preference * liking.loc[keys].to_numpy()
            choice = np.exp(logits - logits.max())
            choice /= choice.sum()
            while left > 0:
                rows = first[keys[int(rng.choice(len(keys), p=choice))]]
                take = min(left, int(rng.geometric(1.0 / self.config.session_tracks)), len(rows))
                picked.append(rows[:take])
                left -= take
        return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)

    def _mix_liking(self, slots: pd.DataFrame) -> pd.Series:
        """Per (user_row, mix_index): the listener's mean expressed affinity over the mix's first `session_tracks`
        slots (what a session mostly hears)."""
        head = slots.loc[slots[s.POSITION] < self.config.session_tracks]
        affinity = self.tastes.expressed(head["user_row"].to_numpy(), head["track_row"].to_numpy())
        return pd.Series(affinity, index=pd.MultiIndex.from_frame(head[["user_row", s.MIX_INDEX]])).groupby(
            level=[0, 1], sort=True).mean()

    def _same_genre_before(self, starts: _Starts) -> np.ndarray:
        """Per start: earlier starts of the same genre by the same user today (starts are in play order)."""
        genre = self.tastes.track_genre[starts.track]
        return pd.Series(genre).groupby([starts.user, genre]).cumcount().to_numpy()

    # ---------------------------------------------------------------------------------------------------------
    # Memory and output
    # ---------------------------------------------------------------------------------------------------------

    def _remember(self, starts: _Starts, skipped: np.ndarray) -> None:
        self.heard[starts.user, starts.track] = True
        np.add.at(self.recent, (starts.user, starts.track), 1)
        self.recent_days.append((starts.user, starts.track))
        if len(self.recent_days) > self.config.fatigue_days:
            old_users, old_tracks = self.recent_days.popleft()
            np.add.at(self.recent, (old_users, old_tracks), -1)
        self.tastes.completed(starts.user[~skipped], starts.track[~skipped])

    def _events(self, starts: _Starts, slots: pd.DataFrame, skipped: np.ndarray, ms_played: np.ndarray,
                offsets: np.ndarray, day: str) -> pd.DataFrame:
        """Starts as events in the normal schema, sorted like the world's history (ts, user_id, track_id)."""
        n = len(starts.user)
        is_slot = starts.slot >= 0
        from_slot = slots.iloc[starts.slot[is_slot]] if len(slots) else slots
        mix_id = pd.array([pd.NA] * n, dtype="string")
        position = pd.array([pd.NA] * n, dtype="Int64")
        policy = pd.array([s.POLICY_ORGANIC] * n, dtype="string")
        propensity = np.full(n, np.nan)
        if is_slot.any():
            mix_id[is_slot] = from_slot[s.MIX_ID].astype("string").to_numpy()
            position[is_slot] = from_slot[s.POSITION].to_numpy(dtype=np.int64)
            policy[is_slot] = from_slot[s.POLICY].astype("string").to_numpy()
            propensity[is_slot] = from_slot[s.PROPENSITY].to_numpy(dtype=float)
        ts = pd.Timestamp(day, tz="UTC").value + np.asarray(offsets, dtype=np.int64) * 1_000_000
        events = pd.DataFrame({
            s.USER_ID: self.tastes.users.to_numpy()[starts.user].astype(np.int64),
            s.TRACK_ID: self.tastes.tracks.to_numpy()[starts.track].astype(np.int64),
            s.TS: pd.to_datetime(ts, utc=True),
            s.MS_PLAYED: np.asarray(ms_played, dtype=np.int64),
            s.SKIPPED: np.asarray(skipped, dtype=bool),
            s.MIX_ID: mix_id, s.POSITION: position, s.POLICY: policy, s.PROPENSITY: propensity,
        }).astype(s.EVENT_DTYPES)
        return events.sort_values([s.TS, s.USER_ID, s.TRACK_ID], kind="stable").reset_index(drop=True)


def _keys_by_user(keys: list[tuple[int, int]]) -> list[tuple[int, list[tuple[int, int]]]]:
    """(user_row, mix_index) keys grouped by user_row, both ascending."""
    grouped: dict[int, list[tuple[int, int]]] = {}
    for key in sorted(keys):
        grouped.setdefault(int(key[0]), []).append(key)
    return list(grouped.items())
