"""An intake pass: the batches that queued together judged by the ingest rules, each as if sent alone, their new rows
stored once through the raw event log (`pipeline.data.events`), their bad rows quarantined per batch."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

import pandas as pd

from pipeline.core import schema as s
from pipeline.core.paths import Layout
from pipeline.data.events import TEXT, api_part_name, batch_quarantine_name, rows_table, write_part, write_quarantine
from pipeline.data.ingest import MALFORMED_LINE, RepeatedKeys, json_object
from pipeline.serve.intake_lock import IntakeLock
from pipeline.serve.models import BatchResult, EventIn, Scalar
from pipeline.serve.stored_keys import StoredKeys
from validation.events import CatalogLookup, Key, ParsedRow, judge_rows, parse_rows


@dataclass
class Intake:
    """One POST's batch through the coalesced intake: its events as text, its content hash, then its result."""

    rows: list[dict[str, str | None]]
    digest: str
    malformed: frozenset[int] = frozenset()  # rows (0-based) naming a key twice: `MALFORMED_LINE`, whatever they hold
    result: BatchResult | None = None
    error: Exception | None = None  # set when this batch's own intake pass failed

    @classmethod
    def of(cls, events: list[EventIn], malformed: frozenset[int] = frozenset()) -> Intake:
        return cls([event_text(e) for e in events], batch_digest(events, malformed), malformed)

    def answer(self) -> BatchResult:
        """The batch's result, once its intake pass has run; raises what failed that pass."""
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class IntakePass:
    """One pass over the batches that queued together; run it holding the data root's intake lock.

    Their rows are judged by the ingest rules together, stored in one raw part per day, and returned for one
    read-merge-write of last-10; each batch keeps its own reasons, result and quarantine part, as if sent alone.
    A batch already stored by an earlier pass (a retry) is judged alone first, so its own earlier rows are not
    duplicates for it (they are acknowledged again, not stored twice) but are for the other batches; the same batch
    twice in one pass is processed once. Rows older than `window_days`, later than the clock, or without a readable
    time are judged for the clock's day, where the rules reject them: a batch touches at most the days of the window,
    and no client may create raw or quarantine partitions for arbitrary past or future days.
    """

    intakes: list[Intake]
    layout: Layout
    keys: StoredKeys
    catalog: CatalogLookup
    now: pd.Timestamp
    window_days: int
    batches: list[Intake] = field(init=False)
    rows: list[ParsedRow] = field(init=False)
    owner: list[int] = field(init=False)  # row -> its batch
    start: list[int] = field(init=False)  # batch r's rows: start[r]:start[r + 1]
    days: list[str] = field(init=False)  # row -> the day it is judged for
    reasons: list[str] = field(init=False)  # row -> "" (accepted) or the rules it failed
    malformed: set[int] = field(init=False)  # rows naming a key twice
    fresh: dict[str, list[int]] = field(init=False)  # day -> accepted rows not stored before, in batch order
    staged: dict[str, set[Key]] = field(init=False)  # day -> their keys: duplicates for later groups

    def __post_init__(self) -> None:
        first: dict[str, Intake] = {}
        for intake in self.intakes:
            first.setdefault(intake.digest, intake)
        self.batches = list(first.values())
        self.rows = parse_rows([row for batch in self.batches for row in batch.rows])
        self.owner = [r for r, batch in enumerate(self.batches) for _ in batch.rows]
        self.start = [0, *accumulate(len(batch.rows) for batch in self.batches)]
        self.malformed = {self.start[r] + i for r, batch in enumerate(self.batches) for i in batch.malformed}
        oldest = self.now - pd.Timedelta(days=self.window_days)
        self.days = [row_day(row, oldest.value, self.now.value, self.now.strftime("%Y-%m-%d")) for row in self.rows]
        self.reasons = [""] * len(self.rows)
        self.fresh, self.staged = {}, {}

    def run(self, lock: IntakeLock) -> list[dict[str, object]]:
        """Judge, store, answer every intake (`result`); returns the accepted rows' values, for last-10."""
        oldest = self.now - pd.Timedelta(days=self.window_days)
        self.keys.forget_before(oldest.strftime("%Y-%m-%d"))
        generation = lock.generation()
        for day in set(self.days):
            self.keys.refresh(self._folder(day), generation)
        self._judge()
        for day in sorted(set(self.days)):
            self._quarantine(day)
            if self._store(day, generation + 1):
                generation = lock.advance(generation + 1)
            self.keys.record(self._folder(day), self.staged.get(day, set()))
        self._answer()
        return [row.values for row, why in zip(self.rows, self.reasons, strict=True) if not why]

    def _folder(self, day: str) -> Path:
        return self.layout.raw_events(day)

    def _judge(self) -> None:
        """Reasons for every row: retried batches alone first, then the others together."""
        retried = sorted({r for r, day in zip(self.owner, self.days, strict=True)
                          if self.keys.holds(self._folder(day), self.batches[r].digest)})
        others = [r for r in range(len(self.batches)) if r not in retried]
        for group in filter(None, [*([r] for r in retried), others]):
            self._judge_group(group, retried=group[0] in retried)

    def _judge_group(self, group: list[int], retried: bool) -> None:
        mine = [i for r in group for i in range(self.start[r], self.start[r + 1])]
        for day in sorted({self.days[i] for i in mine}):
            at = [i for i in mine if self.days[i] == day]
            folder = self._folder(day)
            own = self.keys.own(folder, self.batches[group[0]].digest) if retried else frozenset()
            staged = self.staged.setdefault(day, set())
            judged = judge_rows([self.rows[i] for i in at], day=day, catalog=self.catalog, as_of=self.now,
                                existing_keys=self.keys.existing(folder, own, staged))
            for i, why in zip(at, judged, strict=True):
                why = MALFORMED_LINE if i in self.malformed else why
                self.reasons[i] = why
                if not why and row_key(self.rows[i]) not in own:
                    self.fresh.setdefault(day, []).append(i)
                    staged.add(row_key(self.rows[i]))

    def _quarantine(self, day: str) -> None:
        """Each batch's bad rows of `day` to its own quarantine part (rewritten or removed, as by ingest)."""
        at = [i for i in range(len(self.rows)) if self.days[i] == day]
        for r in sorted({self.owner[i] for i in at}):
            batch = self.batches[r]
            target = self.layout.quarantine(day) / batch_quarantine_name(batch.digest)
            bad = [i for i in at if self.owner[i] == r and self.reasons[i]]
            if bad or target.exists():
                frame = text_frame([self.rows[i].text for i in bad], [i - self.start[r] + 1 for i in bad])
                write_quarantine(frame, pd.Series([self.reasons[i] for i in bad], index=frame.index, dtype=object),
                                 f"api:{batch.digest}", target)

    def _store(self, day: str, generation: int) -> bool:
        """The rows of `day` stored for the first time, in one durable raw part (before anything is acknowledged);
        whether there were any (the part is then the intake's `generation`)."""
        fresh = self.fresh.get(day, [])
        if not fresh:
            return False
        counts = Counter(self.batches[self.owner[i]].digest for i in fresh)
        values = [self.rows[i].values for i in fresh]
        name = api_part_name(day, values)
        write_part(self.layout, day, name, rows_table(values, list(counts.items())))
        self.keys.holding(self._folder(day), name, list(counts), generation)
        return True

    def _answer(self) -> None:
        for r, batch in enumerate(self.batches):
            batch.result = BatchResult.of(self.reasons[self.start[r]:self.start[r + 1]], batch.digest)
        results = {batch.digest: batch.result for batch in self.batches}
        for intake in self.intakes:
            intake.result = results[intake.digest]


def event_text(event: EventIn) -> dict[str, str | None]:
    """An event as the validator expects it: text, as a file would be read."""
    return {c: _as_text(getattr(event, c)) for c in s.EVENT_COLUMNS}


def batch_digest(events: list[EventIn], malformed: frozenset[int] = frozenset()) -> str:
    """Names the batch's quarantine part and its rows in a raw part: a retried batch is recognised (a row naming a key
    twice is not the row holding its last value only)."""
    content = [e.model_dump() for e in events]
    if malformed:
        content = [content, sorted(malformed)]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def repeated_key_rows(body: bytes) -> frozenset[int]:
    """The events (0-based) of a request body that name a key twice, as `dailymix ingest` finds them in a JSONL line:
    which value such an event holds is anyone's guess, so it is malformed. Raises ValueError when the body's own
    object names a key twice, or is not JSON (what the body's validation then refuses)."""
    parsed = json.loads(body, object_pairs_hook=json_object)
    if isinstance(parsed, RepeatedKeys):
        raise ValueError(f"the body names {parsed.key[:80]!r} more than once")
    events = parsed.get("events") if isinstance(parsed, dict) else None
    return frozenset(i for i, e in enumerate(events if isinstance(events, list) else []) if isinstance(e, RepeatedKeys))


def text_frame(rows: list[dict[str, str | None]], source_rows: list[int]) -> pd.DataFrame:
    """Rows as sent (text), indexed by their 1-based row in the batch: the quarantine's form."""
    frame = pd.DataFrame(rows, columns=list(s.EVENT_COLUMNS)).astype(TEXT)
    frame.index = pd.Index(source_rows, name=s.SOURCE_ROW)
    return frame


def row_key(row: ParsedRow) -> Key:
    return row.values[s.USER_ID], row.values[s.TRACK_ID], row.values[s.TS]


def row_day(row: ParsedRow, oldest_ns: int, newest_ns: int, fallback: str) -> str:
    """The UTC day a row claims; `fallback` for rows without a readable time or outside [`oldest_ns`, `newest_ns`]."""
    ns = row.values[s.TS]
    if ns is None or not oldest_ns <= ns <= newest_ns:
        return fallback
    return time.strftime("%Y-%m-%d", time.gmtime(ns // 1_000_000_000))


def _as_text(value: Scalar) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
