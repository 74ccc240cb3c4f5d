"""The serving API: published mixes, event intake with sub-second online freshness, online features, refresh.

Events posted here go through the same row rules as `dailymix ingest` (`validation.events`; for a few
rows its plain-Python evaluation `validate_rows`, tested equal to the vectorised one), are written
durably (fsync'd) to the raw event log first and then merged into each user's last-10 (`user_recent`)
in the online store, written through Feast's provider (where `push` ends), before the answer.
Batches arriving while one is processed are processed together in the next intake pass, which
writes one content-addressed `api-<hash>.parquet` part per day for all of them; the part's Parquet
metadata names the batches it holds, so a retried batch is acknowledged again without storing its
rows twice. A pass holds the data root's intake lock, so `serve --workers N` stays correct. The
offline pipeline picks the parts up through `read_raw_events` like any ingested file. Time comes
only from the injected clock, so TTL behaviour is testable; the 24 h TTL is applied per interaction
at read time (neither online store, SQLite or Redis, expires one view's values of a row by itself).
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import hmac
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path as FilePath
from typing import Annotated, Any

import anyio
import anyio.to_thread
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.paths import Layout
from pipeline.data.events import (
    TEXT,
    api_part_name,
    batch_quarantine_name,
    part_keys_by_batch,
    part_names,
    rows_table,
    write_part,
    write_quarantine,
)
from pipeline.features import store as fs
from pipeline.features.definitions import vocabulary
from pipeline.publish.files import latest_date, user_mixes
from pipeline.serve.coalesce import Coalescer
from validation.events import CatalogLookup, Key, ParsedRow, judge_rows, parse_rows

Clock = Callable[[], pd.Timestamp]
RECENT_FEATURES = ("last_track_ids", "last_skipped", "last_ts")
DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
MAX_ID = 2**63 - 1  # ids are int64 everywhere downstream
Scalar = bool | int | float | str | None
UserId = Annotated[int, Path(ge=0, le=MAX_ID)]
# Module level: annotations are strings here (PEP 563), so FastAPI resolves them in the module's namespace.
Credentials = Annotated[HTTPAuthorizationCredentials | None,
                        Depends(HTTPBearer(auto_error=False, description="DAILYMIX_API_TOKEN"))]
Day = Annotated[str | None, Query(pattern=DAY_PATTERN, description="publication date (default: latest)")]


def utc_now() -> pd.Timestamp:
    """The production clock; everything else receives time from the app's injected clock."""
    return pd.Timestamp.now(tz="UTC")


# --- request and response models ----------------------------------------------------------------


class EventIn(BaseModel):
    """One play event. Fields are loosely typed on purpose: the ingest rules judge them, per row."""

    model_config = ConfigDict(extra="ignore")
    user_id: Scalar = None
    track_id: Scalar = None
    ts: Scalar = Field(None, description="ISO-8601 with a UTC offset, or epoch milliseconds")
    ms_played: Scalar = None
    skipped: Scalar = None
    mix_id: Scalar = None
    position: Scalar = None
    policy: Scalar = None
    propensity: Scalar = None


class EventBatch(BaseModel):
    events: list[EventIn] = Field(min_length=1)


class RowError(BaseModel):
    index: int = Field(description="0-based position of the row in `events`")
    reasons: list[str] = Field(description="every rule the row failed (see validation.events.RULES)")


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    errors: list[RowError]
    batch: str = Field(description="content hash of the batch: names its quarantine part; a retry of the same batch "
                       "is acknowledged again and stored once")


# --- the service ----------------------------------------------------------------------------------


class Service:
    """State shared by the handlers: settings, clock, and the lazily opened Feast store and catalog."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.layout = Layout(settings.home)
        self.clock = clock
        self._opening = threading.Lock()
        self._store = None
        self._tables: dict[str, fs.OnlineTable] = {}
        self._catalog: pd.DataFrame | None = None
        self._lookup: CatalogLookup | None = None
        self._genres: list[str] | None = None
        self.stored_keys = StoredKeys()
        # One intake pass at a time (its read-merge-write of last-10 must not race another and lose events),
        # taking every batch that queued up meanwhile.
        self.intake: Coalescer[Intake] = Coalescer(self._ingest_together)

    @property
    def store(self):
        """Opening (and applying) the Feast repo takes seconds: do it once, on first use."""
        with self._opening:
            if self._store is None:
                self._store = fs.feature_store(self.settings)
            return self._store

    def open(self) -> None:
        """Open the Feast repo and the online tables now (at startup) instead of on the first request; exclusive,
        since workers starting together must not apply the Feast repo at the same time."""
        with self.exclusive():
            for view in (fs.USER_RECENT, fs.USER_PROFILE):
                self.table(view)
        _ = self.lookup, self.genres  # the catalog, read once, not on the first request

    @contextmanager
    def exclusive(self) -> Iterator[IntakeLock]:
        """One holder at a time across the processes serving this data root (`serve --workers N`): an intake pass
        then sees every part already stored and no worker's read-merge-write of last-10 overwrites another's."""
        path = self.settings.home / "features" / "intake.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield IntakeLock(fd)
        finally:
            os.close(fd)  # releases the lock

    def table(self, view: str) -> fs.OnlineTable:
        """The direct online access to a user view, built once (a registry lookup rebuilds it from protobuf)."""
        if view not in self._tables:
            self._tables[view] = fs.OnlineTable(self.store, view, s.USER_ID)
        return self._tables[view]

    @property
    def catalog(self) -> pd.DataFrame:
        if self._catalog is None:
            self._catalog = pd.read_parquet(self.layout.catalog)
        return self._catalog

    @property
    def lookup(self) -> CatalogLookup:
        """The catalog as the row rules read it (track ids, durations), built once."""
        if self._lookup is None:
            catalog = self.catalog
            self._lookup = CatalogLookup.of(catalog[s.TRACK_ID].to_numpy(), pd.Series(
                catalog[s.DURATION_MS].to_numpy(), index=catalog[s.TRACK_ID].to_numpy()))
        return self._lookup

    @property
    def genres(self) -> list[str]:
        if self._genres is None:
            self._genres = vocabulary(self.catalog, s.GENRE)
        return self._genres

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self.clock()).tz_convert("UTC")

    def ttl(self, view: str) -> pd.Timedelta:
        return pd.Timedelta(self.table(view).view.ttl)

    # events ------------------------------------------------------------------------------------

    def ingest(self, events: list[EventIn]) -> BatchResult:
        """Validate per day, store good rows durably, quarantine bad ones, push the fresh last-10; returns when done.

        Batches arriving while another is processed are handled together (`_ingest_together`)."""
        intake = Intake([event_text(e) for e in events], batch_digest(events))
        self.intake.submit(intake)
        return intake.result

    async def ingest_async(self, events: list[EventIn]) -> BatchResult:
        """`ingest` for the event loop: the request waits for its intake pass without holding a thread."""
        intake = Intake([event_text(e) for e in events], batch_digest(events))
        await self.intake.submit_async(intake)
        return intake.result

    def _ingest_together(self, intakes: list[Intake]) -> None:
        """Several requests' batches in one pass: their rows are judged by the ingest rules together, stored in one raw
        part per day, and merged into last-10 in one read-merge-write; each batch keeps its own reasons, result and
        quarantine part, as if sent alone.

        A batch already stored by an earlier pass (a retry) is judged alone first, so its own earlier rows are not
        duplicates for it (they are acknowledged again, not stored twice) but are for the other batches; the same
        batch twice in one pass is processed once."""
        with self.exclusive() as lock:
            self._ingest_exclusively(intakes, lock)

    def _ingest_exclusively(self, intakes: list[Intake], lock: IntakeLock) -> None:
        first: dict[str, Intake] = {}
        for intake in intakes:
            first.setdefault(intake.digest, intake)
        batches = list(first.values())
        now = self.now()
        oldest = now - pd.Timedelta(days=self.settings.training.window_days)
        self.stored_keys.forget_before(oldest.strftime("%Y-%m-%d"))
        rows = parse_rows([row for batch in batches for row in batch.rows])
        owner = [r for r, batch in enumerate(batches) for _ in batch.rows]
        start = [0, *accumulate(len(batch.rows) for batch in batches)]  # batch r's rows: start[r]:start[r + 1]
        days = [row_day(row, oldest.value, now.strftime("%Y-%m-%d")) for row in rows]
        generation, folder = lock.generation(), {day: self.layout.raw_events(day) for day in set(days)}
        for day in folder:
            self.stored_keys.refresh(folder[day], generation)
        retried = sorted({r for r, day in zip(owner, days, strict=True)
                          if self.stored_keys.holds(folder[day], batches[r].digest)})
        groups = [[r] for r in retried] + [[r for r in range(len(batches)) if r not in retried]]
        reasons = [""] * len(rows)
        fresh: dict[str, list[int]] = {}  # day -> accepted rows not stored before, in batch order
        pending: dict[str, set[Key]] = {}  # their keys: duplicates for later groups, recorded once stored
        for group in filter(None, groups):
            mine = [i for r in group for i in range(start[r], start[r + 1])]
            for day in sorted({days[i] for i in mine}):
                at = [i for i in mine if days[i] == day]
                own = self.stored_keys.own(folder[day], batches[group[0]].digest) \
                    if group[0] in retried else frozenset()
                staged = pending.setdefault(day, set())
                existing = self.stored_keys.existing(folder[day], own, staged)
                judged = judge_rows([rows[i] for i in at], day=day, catalog=self.lookup, as_of=now,
                                    existing_keys=existing)
                for i, why in zip(at, judged, strict=True):
                    reasons[i] = why
                    if not why and row_key(rows[i]) not in own:
                        fresh.setdefault(day, []).append(i)
                        staged.add(row_key(rows[i]))
        for day in sorted(set(days)):
            if self._store_day(day, [i for i in range(len(rows)) if days[i] == day], fresh.get(day, []), rows, owner,
                               start, reasons, batches, generation + 1):
                generation = lock.advance(generation + 1)
            self.stored_keys.record(folder[day], pending.get(day, set()))
        accepted = [rows[i].values for i in range(len(rows)) if not reasons[i]]
        if accepted:
            self._write_recent(accepted)
        for r, batch in enumerate(batches):
            batch.result = batch_result(reasons[start[r]:start[r + 1]], batch.digest)
        for intake in intakes:
            intake.result = first[intake.digest].result

    def _store_day(self, day: str, at: list[int], fresh: list[int], rows: list[ParsedRow], owner: list[int],
                   start: list[int], reasons: list[str], batches: list[Intake], generation: int) -> bool:
        """One day of a pass: the rows stored for the first time go to one raw part (and its explore rows to one
        exploration part), durably, before anything is acknowledged; bad rows to their batch's quarantine part.
        Whether a raw part was written (it is then the intake's `generation`)."""
        for r in sorted({owner[i] for i in at}):
            mine = [i for i in at if owner[i] == r]
            quarantine = self.layout.quarantine(day) / batch_quarantine_name(batches[r].digest)
            bad = [i for i in mine if reasons[i]]
            if bad or quarantine.exists():  # rewritten or removed, as by ingest; else nothing to do
                frame = text_frame([rows[i].text for i in bad], [i - start[r] + 1 for i in bad])
                write_quarantine(frame, pd.Series([reasons[i] for i in bad], index=frame.index, dtype=object),
                                 f"api:{batches[r].digest}", quarantine)
        if not fresh:
            return False
        counts = Counter(batches[owner[i]].digest for i in fresh)
        values = [rows[i].values for i in fresh]
        name = api_part_name(day, values)
        folder = write_part(self.layout, day, name, rows_table(values, list(counts.items()))).parent
        self.stored_keys.holding(folder, name, list(counts), generation)
        return True

    def _write_recent(self, accepted: list[dict]) -> None:
        """One read-merge-write of the last-10 of the accepted rows' users: the stored interactions plus the new
        ones, within the TTL, written back through Feast. Callers serialise it (the intake lock)."""
        horizon_ms = (self.now() - self.ttl(fs.USER_RECENT)).value // 1_000_000
        new: dict[int, list[tuple[int, int, bool]]] = {}
        for row in accepted:
            new.setdefault(row[s.USER_ID], []).append((row[s.TS] // 1_000_000, row[s.TRACK_ID], row[s.SKIPPED]))
        stored = self.table(fs.USER_RECENT).read(list(new), RECENT_FEATURES)
        merged = {user: merge_recent(interactions(values), new[user], horizon_ms)
                  for user, (_, values) in zip(new, stored, strict=True)}
        rows = [(user, last[-1][0], {"last_track_ids": [t for _, t, _ in last],
                                     "last_skipped": [int(k) for *_, k in last], "last_ts": [ms for ms, *_ in last]})
                for user, last in merged.items() if last]
        if rows:
            self.table(fs.USER_RECENT).write(rows)

    def live_recent(self, user_id: int, now: pd.Timestamp) -> list[tuple[int, int, bool]]:
        """One user's stored last-10 younger than the TTL, oldest first: (epoch ms, track_id, skipped)."""
        (_, values), = self.table(fs.USER_RECENT).read([user_id], RECENT_FEATURES)
        horizon_ms = (now - self.ttl(fs.USER_RECENT)).value // 1_000_000
        return sorted((i for i in interactions(values) if i[0] > horizon_ms), key=lambda i: i[0])

    # features ----------------------------------------------------------------------------------

    def features(self, user_id: int) -> dict[str, Any]:
        """Last-10 interactions younger than the TTL, and the genre affinity of the latest snapshot."""
        now = self.now()
        live = self.live_recent(user_id, now)
        return {
            "user_id": user_id,
            "as_of": now.isoformat(),
            "last_interactions": {
                "ttl_seconds": int(self.ttl(fs.USER_RECENT).total_seconds()),
                "feature_ts": iso_ms(live[-1][0]) if live else None,
                "items": [{"track_id": track, "skipped": skipped, "ts": iso_ms(ms)} for ms, track, skipped in live],
            },
            "genre_affinity": self._genre_affinity(user_id, now),
        }

    def _genre_affinity(self, user_id: int, now: pd.Timestamp) -> dict[str, Any] | None:
        (stamp, values), = self.table(fs.USER_PROFILE).read([user_id], ("genre_affinity",))
        vector = values.get("genre_affinity")
        if vector is None or stamp is None or stamp <= now - self.ttl(fs.USER_PROFILE):
            return None
        return {"feature_ts": stamp.isoformat(), "values": dict(zip(self.genres, map(float, vector), strict=False))}

    # refresh -----------------------------------------------------------------------------------

    def refresh(self, user_id: int, day: str | None) -> dict[str, Any]:
        """The published mixes minus tracks skipped in the live last-10, with those tracks' artists last."""
        payload = published_mixes(self.settings, user_id, day)
        skipped = {track for _, track, was_skipped in self.live_recent(user_id, self.now()) if was_skipped}
        artists = set(self.catalog.loc[self.catalog[s.TRACK_ID].isin(skipped), s.ARTIST_ID].tolist())
        for mix in payload["mixes"]:
            mix["tracks"] = rerank_tracks(mix["tracks"], skipped, artists)
        payload["refresh"] = {"as_of": self.now().isoformat(), "dropped_track_ids": sorted(skipped),
                              "demoted_artist_ids": sorted(artists)}
        return payload


class IntakeLock:
    """The held intake lock of a data root. Its file also counts the raw parts API processes wrote under it (the
    *generation*), so a process knows, without listing a day's folder, whether another worker wrote since."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def generation(self) -> int:
        return int.from_bytes(os.pread(self.fd, 8, 0).ljust(8, b"\0"), "little")

    def advance(self, generation: int) -> int:
        os.pwrite(self.fd, generation.to_bytes(8, "little"), 0)
        return generation


class StoredKeys:
    """Duplicate keys (user, track, ts in ns) of the raw parts of each day, each part read once per process, and
    which API batches each part holds. Used inside intake passes only, which are serialised.

    The duplicate rule needs every key already stored for the day; re-reading the day's parts on each pass would
    make a pass cost O(parts so far), and so did listing the folder (~1 ms per pass at 1,500 parts). A folder is
    listed again, and only its unseen parts read, when another API process wrote a part since (the intake lock's
    generation), when the folder changed otherwise (its mtime), and at least every `RELIST_S` (a part `dailymix
    ingest` renames into the folder while a pass writes there changes the mtime together with the pass' own part).
    Days older than the window are forgotten (the API rejects their events anyway).
    """

    RELIST_S = 1.0

    def __init__(self) -> None:
        self._keys: dict[FilePath, set[Key]] = {}
        self._parts: dict[FilePath, set[str]] = {}
        self._batches: dict[FilePath, dict[str, list[str]]] = {}  # batch digest -> the parts holding its rows
        self._listed: dict[FilePath, tuple[int, int, float]] = {}  # generation, mtime_ns, monotonic time of listing

    def refresh(self, folder: FilePath, generation: int) -> None:
        """Read the keys of the folder's parts not seen yet, if it may have any."""
        mtime, now = _mtime_ns(folder), time.monotonic()
        listed = self._listed.get(folder)
        if listed is not None and listed[:2] == (generation, mtime) and now - listed[2] < self.RELIST_S:
            return
        seen = self._parts.setdefault(folder, set())
        keys, batches = self._keys.setdefault(folder, set()), self._batches.setdefault(folder, {})
        for name in [n for n in part_names(folder) if n not in seen]:
            for digest, part_keys in part_keys_by_batch(folder / name):
                keys.update(part_keys)
                if digest is not None:
                    batches.setdefault(digest, []).append(name)
            seen.add(name)
        self._listed[folder] = (generation, mtime, now)

    def holds(self, folder: FilePath, digest: str) -> bool:
        """Whether a part of the folder holds rows of the API batch `digest` (it is a retry)."""
        return digest in self._batches.get(folder, {})

    def own(self, folder: FilePath, digest: str) -> frozenset[Key]:
        """The keys the API batch `digest` stored in the folder (read back from its parts: retries are rare)."""
        return frozenset(key for name in self._batches.get(folder, {}).get(digest, [])
                         for d, keys in part_keys_by_batch(folder / name) if d == digest for key in keys)

    def existing(self, folder: FilePath, own: frozenset[Key], staged: set[Key]) -> Container[Key]:
        """The keys a batch's rows are duplicates of: stored ones except its own (a retry), and those staged by this
        pass."""
        return _Existing(self._keys.setdefault(folder, set()), own, staged)

    def record(self, folder: FilePath, keys: set[Key]) -> None:
        """Add the keys of rows this process just stored, so none is read back."""
        self._keys.setdefault(folder, set()).update(keys)

    def holding(self, folder: FilePath, name: str, digests: list[str], generation: int) -> None:
        """Note a part this process just wrote (as the intake's `generation`) and the API batches it holds."""
        self._parts.setdefault(folder, set()).add(name)
        for digest in digests:
            self._batches.setdefault(folder, {}).setdefault(digest, []).append(name)
        if folder in self._listed:
            self._listed[folder] = (generation, _mtime_ns(folder), self._listed[folder][2])

    def forget_before(self, day: str) -> None:
        for store in (self._keys, self._parts, self._batches, self._listed):
            for folder in [f for f in store if f.name.removeprefix("date=") < day]:
                del store[folder]


def _mtime_ns(folder: FilePath) -> int:
    try:
        return os.stat(folder).st_mtime_ns
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class _Existing:
    stored: set[Key]
    own: frozenset[Key]
    staged: set[Key]

    def __contains__(self, key: object) -> bool:
        return (key in self.stored and key not in self.own) or key in self.staged


def interactions(values: dict) -> list[tuple[int, int, bool]]:
    """A stored last-10 row as (epoch ms, track_id, skipped) tuples; none for a user without one."""
    tracks = values.get("last_track_ids")
    if tracks is None:
        return []
    return [(int(ms), int(t), bool(k))
            for t, k, ms in zip(tracks, values["last_skipped"], values.get("last_ts") or [], strict=False)]


def merge_recent(stored: list[tuple[int, int, bool]], new: list[tuple[int, int, bool]], horizon_ms: int,
                 n: int = 10) -> list[tuple[int, int, bool]]:
    """`features.last_interactions` of one user's stored last-n plus new interactions (epoch ms, track_id,
    skipped): the first of equal (track, ms) kept, those at or before the horizon dropped, the newest n in time
    order (ties in arrival order). Plain Python: for a handful of rows per pass, pandas' per-call cost dominated."""
    seen: set[tuple[int, int]] = set()
    kept = []
    for ms, track, skipped in [*stored, *new]:
        if ms > horizon_ms and (track, ms) not in seen:
            seen.add((track, ms))
            kept.append((ms, track, skipped))
    return sorted(kept, key=lambda i: i[0])[-n:]


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as `pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()` writes them, without pandas."""
    return (datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)).isoformat()


def rerank_tracks(tracks: list[dict], skipped: set[int], artists: set[int]) -> list[dict]:
    """Drop skipped tracks; keep order otherwise, but move the skipped tracks' artists to the end."""
    kept = [t for t in tracks if t["track_id"] not in skipped]
    ordered = [t for t in kept if t["artist_id"] not in artists] + [t for t in kept if t["artist_id"] in artists]
    return [{**t, "published_position": t["position"], "position": i} for i, t in enumerate(ordered)]


def published_mixes(settings: Settings, user_id: int, day: str | None) -> dict[str, Any]:
    """`publish.user_mixes`, with "nothing published for this user" as a 404."""
    try:
        payload = user_mixes(settings, user_id, day)
    except LookupError as error:
        raise HTTPException(404, str(error)) from error
    if not payload["mixes"]:
        raise HTTPException(404, f"no mixes published for user {user_id} on {payload['date']}")
    return payload


@dataclass
class Intake:
    """One POST's batch through the coalesced intake: its events as text, its content hash, then its result."""

    rows: list[dict[str, str | None]]
    digest: str
    result: BatchResult | None = None


def event_text(event: EventIn) -> dict[str, str | None]:
    """An event as the validator expects it: text, as a file would be read."""
    return {c: _as_text(getattr(event, c)) for c in s.EVENT_COLUMNS}


def batch_digest(events: list[EventIn]) -> str:
    """Names the batch's parts: a retried batch rewrites its own part instead of duplicating it."""
    return hashlib.sha256(json.dumps([e.model_dump() for e in events], sort_keys=True).encode()).hexdigest()[:16]


def text_frame(rows: list[dict[str, str | None]], source_rows: list[int]) -> pd.DataFrame:
    """Rows as sent (text), indexed by their 1-based row in the batch: the quarantine's form."""
    frame = pd.DataFrame(rows, columns=list(s.EVENT_COLUMNS)).astype(TEXT)
    frame.index = pd.Index(source_rows, name=s.SOURCE_ROW)
    return frame


def batch_result(reasons: list[str], digest: str) -> BatchResult:
    """One batch's answer from its rows' reasons ("" for a kept row), in row order."""
    errors = [RowError(index=i, reasons=why.split(";")) for i, why in enumerate(reasons) if why]
    return BatchResult(accepted=len(reasons) - len(errors), rejected=len(errors), errors=errors, batch=digest)


def row_key(row: ParsedRow) -> Key:
    return row.values[s.USER_ID], row.values[s.TRACK_ID], row.values[s.TS]


def row_day(row: ParsedRow, oldest_ns: int, fallback: str) -> str:
    """The UTC day a row claims. Rows without a readable time, and rows older than `oldest_ns` (no client may create
    raw partitions for arbitrary past days), go to `fallback`, where the rules reject them (outside_day)."""
    ns = row.values[s.TS]
    if ns is None or ns < oldest_ns:
        return fallback
    return time.strftime("%Y-%m-%d", time.gmtime(ns // 1_000_000_000))


def _as_text(value: Scalar) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- HTTP -----------------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: a body over `max_bytes` gets 413 before it is parsed (chunked bodies included)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._reject(scope, receive, send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


def bearer_guard(token: str | None) -> Callable:
    """A dependency demanding `Authorization: Bearer <token>`; None (only via --insecure-dev) disables it."""
    async def check(credentials: Credentials) -> None:  # async: FastAPI runs a plain def in a thread, per request
        if token is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(settings: Settings, token: str | None, clock: Clock = utc_now) -> FastAPI:
    """The Daily Mix API over one data root. `token=None` means unauthenticated (local development only)."""
    service = Service(settings, clock)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await anyio.to_thread.run_sync(service.open)
        # Everything loaded so far (Feast, pandas, pyarrow, the catalog: ~200k objects) lives as long as the process.
        # Left to the collector, each full collection walks all of it and stalls every request for ~100 ms.
        gc.collect()
        gc.freeze()
        yield

    app = FastAPI(title="Daily Mix", version="1", description=__doc__, lifespan=lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(bearer_guard(token))],
                   responses={401: {"description": "missing or wrong bearer token"}})

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness, no auth: says which publication readers get by default."""
        return {"status": "ok", "latest_published": latest_date(settings)}

    @v1.get("/users/{user_id}/mixes", responses={404: {"description": "nothing published"}})
    def mixes(user_id: UserId, date: Day = None) -> dict[str, Any]:
        """The published mixes (stable contract of `dailymix mixes --json`): titles, tracks, discovery, lineage."""
        return published_mixes(settings, user_id, date)

    @v1.post("/events", status_code=202, response_model=BatchResult,
             responses={422: {"model": BatchResult, "description": "some rows rejected (the rest accepted)"},
                        413: {"description": "too many rows or too large a body"}})
    async def events(batch: EventBatch) -> JSONResponse:
        """Validate with the ingest rules, append good rows to the raw log, push them online; bad rows → reasons."""
        if len(batch.events) > settings.api.max_batch_rows:
            raise HTTPException(413, f"{len(batch.events)} events > {settings.api.max_batch_rows} per batch")
        result = await service.ingest_async(batch.events)
        return JSONResponse(result.model_dump(), status_code=422 if result.rejected else 202)

    @v1.get("/users/{user_id}/features", response_model=dict[str, Any])
    async def features(user_id: UserId) -> JSONResponse:
        """Current online features: last-10 interactions (24 h TTL, per interaction) and genre affinity."""
        # In the event loop, not a thread: two point reads (sub-millisecond) cost less than the hand-over to a thread
        # and back, the largest cost of this request under load.
        return JSONResponse(service.features(user_id))

    @v1.post("/users/{user_id}/mixes/refresh", responses={404: {"description": "nothing published"}})
    def refresh(user_id: UserId, date: Day = None) -> dict[str, Any]:
        """Re-rank the published mixes with fresh online features; the published files are never modified."""
        return service.refresh(user_id, date)

    app.include_router(v1)
    return app



INSECURE_DEV = "DAILYMIX_API_INSECURE_DEV"  # set by `serve --insecure-dev` for its worker processes only


def app_from_environment() -> FastAPI:
    """The app of each `dailymix serve --workers N` process (uvicorn imports workers' apps by name): data root and
    token from the environment `serve` prepared."""
    from pipeline.core.config import load_settings

    token = os.environ.get("DAILYMIX_API_TOKEN") or None
    if token is None and os.environ.get(INSECURE_DEV) != "1":
        raise RuntimeError("DAILYMIX_API_TOKEN is not set; refusing to serve without auth")
    return create_app(load_settings(), token)
