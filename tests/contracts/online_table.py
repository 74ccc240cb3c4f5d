"""The online last-10 table's contract: one test class that every online store's table passes (SQLite, Redis).

A subclass provides the `last_ten` fixture: a `LastTen` over a fresh, empty online store of its kind.
"""

from __future__ import annotations

import pandas as pd

from pipeline.core import schema as s
from pipeline.serve.online import LastTen

DAY = "2026-11-01"
NOON = pd.Timestamp(f"{DAY}T12:00:00Z")
TTL = pd.Timedelta(hours=24)  # `user_recent`'s TTL (pipeline.features.store)
UNKNOWN_USER = 10**12


def at(clock: str) -> pd.Timestamp:
    """A time of DAY, "HH:MM"."""
    return pd.Timestamp(f"{DAY}T{clock}:00Z")


def ms(clock: str) -> int:
    return at(clock).value // 1_000_000


def play(user: int, track: int, clock: str, skipped: bool = False) -> dict[str, object]:
    """An accepted row as intake hands it over (values as the row rules give them: ts in ns since the epoch)."""
    return {s.USER_ID: user, s.TRACK_ID: track, s.TS: at(clock).value, s.SKIPPED: skipped}


class OnlineTableContract:
    """Read, write, the TTL applied per play at read time, unknown users; the same answers from every store."""

    def test_the_views_ttl_is_a_day(self, last_ten: LastTen) -> None:
        assert last_ten.ttl == TTL

    def test_an_unknown_user_has_no_plays(self, last_ten: LastTen) -> None:
        assert last_ten.live(UNKNOWN_USER, NOON) == []
        last_ten.merge([play(1, 10, "11:00")], NOON)
        assert last_ten.live(UNKNOWN_USER, NOON) == []

    def test_written_plays_are_read_back_oldest_first(self, last_ten: LastTen) -> None:
        last_ten.merge([play(1, 10, "11:30"), play(1, 11, "10:15", skipped=True)], NOON)
        assert last_ten.live(1, NOON) == [(ms("10:15"), 11, True), (ms("11:30"), 10, False)]

    def test_users_are_kept_apart(self, last_ten: LastTen) -> None:
        last_ten.merge([play(1, 10, "11:00"), play(2, 20, "11:01", skipped=True)], NOON)
        last_ten.merge([play(2, 21, "11:02")], NOON)
        assert last_ten.live(1, NOON) == [(ms("11:00"), 10, False)]
        assert last_ten.live(2, NOON) == [(ms("11:01"), 20, True), (ms("11:02"), 21, False)]

    def test_writes_merge_into_the_newest_ten(self, last_ten: LastTen) -> None:
        last_ten.merge([play(4, 100 + i, f"10:{i:02d}") for i in range(7)], NOON)
        again = play(4, 106, "10:06", skipped=True)  # the same play again (track and time): kept once, as first seen
        last_ten.merge([again, *(play(4, 100 + i, f"10:{i:02d}") for i in range(7, 14))], NOON)
        assert last_ten.live(4, NOON) == [(ms(f"10:{i:02d}"), 100 + i, False) for i in range(4, 14)]

    def test_the_ttl_drops_each_play_at_read_time(self, last_ten: LastTen) -> None:
        last_ten.merge([play(2, 10, "11:00"), play(2, 11, "11:05", skipped=True)], NOON)
        both = [(ms("11:00"), 10, False), (ms("11:05"), 11, True)]
        assert last_ten.live(2, at("11:00") + TTL - pd.Timedelta(seconds=1)) == both
        assert last_ten.live(2, at("11:00") + TTL) == both[1:]  # a play exactly TTL old is stale
        assert last_ten.live(2, at("11:05") + TTL + pd.Timedelta(seconds=1)) == []
        assert last_ten.live(2, NOON) == both  # stale only as of a later clock: nothing was deleted

    def test_a_write_leaves_out_plays_already_beyond_the_ttl(self, last_ten: LastTen) -> None:
        later = at("11:00") + TTL + pd.Timedelta(minutes=1)  # the 11:00 play is stale by then, the 12:30 one not
        last_ten.merge([play(3, 10, "11:00"), play(3, 11, "12:30")], later)
        assert last_ten.live(3, at("13:00")) == [(ms("12:30"), 11, False)]  # as of an earlier clock: never written
