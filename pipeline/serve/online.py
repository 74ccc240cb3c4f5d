"""The online last-10 of each user (`user_recent`): merged into by intake, read back without the plays older than the
view's TTL, applied per play at read time (neither online store, SQLite or Redis, expires one view's values by itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pandas as pd

from pipeline.core import schema as s
from pipeline.features import store as fs

Play = tuple[int, int, bool]  # (epoch ms, track_id, skipped)
RECENT_FEATURES = ("last_track_ids", "last_skipped", "last_ts")
LAST_N = 10


class LastTen:
    """A user's last 10 plays in one online table (SQLite or Redis, through Feast's provider)."""

    def __init__(self, table: fs.OnlineTable) -> None:
        self.table = table
        self.ttl = pd.Timedelta(table.view.ttl)

    def live(self, user_id: int, now: pd.Timestamp) -> list[Play]:
        """The user's stored plays younger than the TTL at `now`, oldest first; none for a user without any."""
        (_, values), = self.table.read([user_id], RECENT_FEATURES)
        horizon_ms = self._horizon_ms(now)
        return sorted((play for play in interactions(values) if play[0] > horizon_ms), key=lambda play: play[0])

    def merge(self, accepted: list[Mapping[str, object]], now: pd.Timestamp) -> None:
        """One read-merge-write of the accepted rows' users (values as the row rules give them: ts in ns): the stored
        plays plus the new ones, within the TTL, written back. Callers serialise it (the intake lock)."""
        horizon_ms = self._horizon_ms(now)
        new: dict[int, list[Play]] = {}
        for row in accepted:
            new.setdefault(row[s.USER_ID], []).append((row[s.TS] // 1_000_000, row[s.TRACK_ID], row[s.SKIPPED]))
        stored = self.table.read(list(new), RECENT_FEATURES)
        merged = {user: merge_recent(interactions(values), new[user], horizon_ms)
                  for user, (_, values) in zip(new, stored, strict=True)}
        rows = [(user, last[-1][0], {"last_track_ids": [t for _, t, _ in last],
                                     "last_skipped": [int(k) for *_, k in last], "last_ts": [ms for ms, *_ in last]})
                for user, last in merged.items() if last]
        if rows:
            self.table.write(rows)

    def _horizon_ms(self, now: pd.Timestamp) -> int:
        return (now - self.ttl).value // 1_000_000


def interactions(values: dict) -> list[Play]:
    """A stored last-10 row as plays; none for a user without one."""
    tracks = values.get("last_track_ids")
    if tracks is None:
        return []
    return [(int(ms), int(t), bool(k))
            for t, k, ms in zip(tracks, values["last_skipped"], values.get("last_ts") or [], strict=False)]


def merge_recent(stored: list[Play], new: list[Play], horizon_ms: int, n: int = LAST_N) -> list[Play]:
    """`features.last_interactions` of one user's stored last-n plus new plays: the first of equal (track, ms) kept,
    those at or before the horizon dropped, the newest n in time order (ties in arrival order). Plain Python: for a
    handful of rows per pass, pandas' per-call cost dominated."""
    seen: set[tuple[int, int]] = set()
    kept = []
    for ms, track, skipped in [*stored, *new]:
        if ms > horizon_ms and (track, ms) not in seen:
            seen.add((track, ms))
            kept.append((ms, track, skipped))
    return sorted(kept, key=lambda play: play[0])[-n:]


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as `pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()` writes them, without pandas."""
    return (datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)).isoformat()
