"""The serving API: published mixes, event intake with sub-second online freshness, online features, refresh.

Events posted here go through the same row rules as `dailymix ingest` (`validation.events`), are
written durably to the raw event log first (a content-addressed `api-<hash>.parquet` part per day,
so a retried batch overwrites itself instead of duplicating) and then merged into each user's
last-10 (`user_recent`) in the online store, written through Feast's provider (where `push` ends),
before the answer. Batches arriving while one is processed are processed together in the next
intake pass (the rules cost per call, not per row); a pass holds the data root's intake lock, so
`serve --workers N` stays correct. The offline pipeline picks the parts up through
`read_raw_events` like any ingested file. Time comes only from the injected clock, so TTL behaviour
is testable; the 24 h TTL is applied per interaction at read time (neither online store, SQLite
or Redis, expires one view's values of a row by itself).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Annotated, Any

import anyio
import anyio.to_thread
import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from pipeline import feature_store as fs
from pipeline import schema as s
from pipeline.coalesce import Coalescer
from pipeline.config import Settings
from pipeline.features import epoch_ms, vocabulary
from pipeline.ingest import TEXT, write_exploration, write_quarantine
from pipeline.io import atomic_write_table
from pipeline.paths import Layout
from pipeline.publish import latest_date, user_mixes
from validation.events import DUPLICATE_KEY, validate_events

Clock = Callable[[], pd.Timestamp]
RECENT_FEATURES = ("last_track_ids", "last_skipped", "last_ts")
INTAKE_THREADS = 64  # POSTs in flight at once; more wait for a thread (and join a later intake pass)
REQUEST = "request"  # index level: which batch of a coalesced intake pass a row came from
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
    batch: str = Field(description="content hash naming the raw and quarantine parts of this batch")


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
        self._durations: pd.Series | None = None
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

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One holder at a time across the processes serving this data root (`serve --workers N`): an intake pass
        then sees every part already stored and no worker's read-merge-write of last-10 overwrites another's."""
        path = self.settings.home / "features" / "intake.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:  # closing it releases the lock
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

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
    def durations(self) -> pd.Series:
        """duration_ms by track_id, for the absurd_duration rule."""
        if self._durations is None:
            catalog = self.catalog
            self._durations = pd.Series(catalog[s.DURATION_MS].to_numpy(), index=catalog[s.TRACK_ID].to_numpy())
        return self._durations

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

    def _ingest_together(self, intakes: list[Intake]) -> None:
        """Several requests' batches in one pass: the rules' cost is mostly per call, not per row, so they run once
        over all rows; each batch keeps its own raw and quarantine parts, reasons and result, as if sent alone.

        A batch whose part already exists (a retry) is validated alone first, so its own earlier rows are not
        duplicates for it but are for the other batches; the same batch twice in one pass is processed once."""
        with self.exclusive():
            self._ingest_exclusively(intakes)

    def _ingest_exclusively(self, intakes: list[Intake]) -> None:
        first: dict[str, Intake] = {}
        for intake in intakes:
            first.setdefault(intake.digest, intake)
        batches = list(first.values())
        frame = text_frame([b.rows for b in batches])
        now = self.now()
        oldest = now - pd.Timedelta(days=self.settings.training.window_days)
        self.stored_keys.forget_before(oldest.strftime("%Y-%m-%d"))
        days = row_days(frame, fallback=now.strftime("%Y-%m-%d"), oldest=oldest).to_numpy()
        request = frame.index.get_level_values(REQUEST).to_numpy()
        retried = sorted({r for r, day in set(zip(request, days, strict=True))
                          if (self.layout.raw_events(day) / part_name(batches[r].digest)).exists()})
        groups = [[r] for r in retried] + [[r for r in range(len(batches)) if r not in retried]]
        reasons = np.full(len(frame), "", dtype=object)
        accepted = []
        for group in filter(None, groups):
            in_group = np.isin(request, group)
            for day in sorted(set(days[in_group])):
                at = np.flatnonzero(in_group & (days == day))
                good, why = self._validate_day(frame.iloc[at], day, batches, now)
                reasons[at] = why.to_numpy()
                accepted.append(good)
        fresh = pd.concat(accepted)
        if len(fresh):
            self._write_recent(fresh[[s.USER_ID, s.TRACK_ID, s.TS, s.SKIPPED]].reset_index(drop=True))
        kept = np.bincount(fresh.index.get_level_values(REQUEST).to_numpy(), minlength=len(batches))
        for r, batch in enumerate(batches):
            batch.result = batch_result(reasons[span(request, r)], int(kept[r]), batch.digest)
        for intake in intakes:
            intake.result = first[intake.digest].result

    def _validate_day(self, part: pd.DataFrame, day: str, batches: list[Intake],
                      now: pd.Timestamp) -> tuple[pd.DataFrame, pd.Series]:
        """One day's rows of some batches (index: request, row; each request's rows contiguous): validated
        together, stored per batch. Per batch only its files are touched, so a pass costs little per batch."""
        import pyarrow as pa

        folder = self.layout.raw_events(day)
        requests = part.index.get_level_values(REQUEST).to_numpy()
        users = pd.to_numeric(part[s.USER_ID], errors="coerce").dropna().unique()
        own = {part_name(batches[r].digest) for r in np.unique(requests)}
        good, why = validate_events(part, day=day, catalog_track_ids=self.catalog[s.TRACK_ID].to_numpy(),
                                    track_durations_ms=self.durations, as_of=now,
                                    existing_keys=self.stored_keys.others(folder, own, users))
        kept = good.index.get_level_values(REQUEST).to_numpy()
        table = pa.Table.from_pandas(good.reset_index(drop=True), preserve_index=False)  # sliced per batch, no copy
        bad = (why != "").to_numpy()
        explore = (good[s.POLICY] == s.POLICY_EXPLORE).fillna(False).to_numpy(dtype=bool)
        for r in np.unique(requests):
            name, mine, stored = part_name(batches[r].digest), span(requests, r), span(kept, r)
            quarantine, exploration = self.layout.quarantine(day) / name, self.layout.exploration(day) / name
            if bad[mine].any() or quarantine.exists():  # rewritten or removed, as by ingest; else nothing to do
                rows, reasons = part.iloc[mine].droplevel(REQUEST), why.iloc[mine].droplevel(REQUEST)
                write_quarantine(rows[bad[mine]], reasons[bad[mine]], f"api:{batches[r].digest}", quarantine)
            if stored.stop > stored.start:
                # Durable before anything is acknowledged.
                atomic_write_table(table.slice(stored.start, stored.stop - stored.start), folder / name)
                if explore[stored].any() or exploration.exists():  # kept apart for off-policy evaluation
                    write_exploration(good.iloc[stored], exploration)
        self.stored_keys.record(folder, good.assign(part=[part_name(batches[r].digest) for r in kept]))
        return good, why

    def _write_recent(self, fresh: pd.DataFrame) -> None:
        """One read-merge-write of the last-10 of fresh's users: the stored interactions plus the new ones,
        within the TTL, written back through Feast. Callers serialise it (the intake lock)."""
        horizon_ms = (self.now() - self.ttl(fs.USER_RECENT)).value // 1_000_000
        new: dict[int, list[tuple[int, int, bool]]] = {}
        for user, ms, track, skipped in zip(fresh[s.USER_ID].tolist(), epoch_ms(fresh[s.TS]).tolist(),
                                            fresh[s.TRACK_ID].tolist(), fresh[s.SKIPPED].tolist(), strict=True):
            new.setdefault(user, []).append((ms, track, bool(skipped)))
        stored = self.table(fs.USER_RECENT).read(list(new), RECENT_FEATURES)
        merged = {user: merge_recent(interactions(values), new[user], horizon_ms)
                  for user, (_, values) in zip(new, stored, strict=True)}
        rows = pd.DataFrame([(user, pd.Timestamp(last[-1][0], unit="ms", tz="UTC"), [t for _, t, _ in last],
                              [int(k) for *_, k in last], [ms for ms, *_ in last])
                             for user, last in merged.items() if last],
                            columns=[s.USER_ID, s.EVENT_TIMESTAMP, *RECENT_FEATURES])
        if len(rows):
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


class StoredKeys:
    """Duplicate keys (user, track, ts) of the raw parts of each day, each part read once per process.

    The duplicate rule needs every key already stored for the day; re-reading all of the day's parts on each
    request made a POST cost O(parts so far). New parts (from ingest or another API process) are still seen:
    the directory is listed on every request and only unseen parts are read. Days older than the window are
    forgotten (the API rejects their events anyway).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[FilePath, tuple[set[str], pd.DataFrame]] = {}

    def others(self, folder: FilePath, own: set[str], users) -> pd.DataFrame | None:
        """Keys of `users` in the day folder's parts not named in `own` (a retried batch rewrites its own part)."""
        with self._lock:
            seen, keys = self._days.get(folder, (set(), None))
            names = os.listdir(folder) if folder.is_dir() else []  # (a glob's per-name matching cost more, per part)
            new = sorted(folder / n for n in names if n.endswith(".parquet") and n not in seen)
            if new:
                frames = [pd.read_parquet(p, columns=list(DUPLICATE_KEY)).assign(part=p.name) for p in new]
                keys = pd.concat([keys, *frames], ignore_index=True)  # concat skips the None of a first read
                self._days[folder] = (seen | {p.name for p in new}, keys)
        if keys is None:
            return None
        mine = keys.loc[~keys["part"].isin(own) & keys[s.USER_ID].isin(users), list(DUPLICATE_KEY)]
        return mine if len(mine) else None

    def record(self, folder: FilePath, rows: pd.DataFrame) -> None:
        """Add the keys of parts this process just wrote (`rows` name theirs in `part`), so none is read back."""
        parts = set(rows["part"])
        with self._lock:
            seen, keys = self._days.get(folder, (set(), None))
            if keys is not None and parts & seen:
                keys = keys.loc[~keys["part"].isin(parts)]
            new = rows[[*DUPLICATE_KEY, "part"]].reset_index(drop=True)
            self._days[folder] = (seen | parts, pd.concat([keys, new], ignore_index=True))

    def forget_before(self, day: str) -> None:
        with self._lock:
            for folder in [f for f in self._days if f.name.removeprefix("date=") < day]:
                del self._days[folder]


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
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


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


def part_name(digest: str) -> str:
    return f"api-{digest}.parquet"


def span(sorted_ids: np.ndarray, value: int) -> slice:
    """Where `value` runs in a sorted array."""
    return slice(int(np.searchsorted(sorted_ids, value, "left")), int(np.searchsorted(sorted_ids, value, "right")))


def text_frame(batches: list[list[dict[str, str | None]]]) -> pd.DataFrame:
    """Several batches as one text frame indexed by (request, 1-based row of that request)."""
    rows = [row for batch in batches for row in batch]
    frame = pd.DataFrame(rows, columns=list(s.EVENT_COLUMNS)).astype(TEXT)
    frame.index = pd.MultiIndex.from_tuples([(r, i) for r, batch in enumerate(batches)
                                             for i in range(1, len(batch) + 1)], names=[REQUEST, s.SOURCE_ROW])
    return frame


def batch_result(reasons: np.ndarray, accepted: int, digest: str) -> BatchResult:
    """One batch's answer from its rows' reasons ("" for a kept row), in row order."""
    errors = [RowError(index=i, reasons=str(reasons[i]).split(";")) for i in np.flatnonzero(reasons != "")]
    return BatchResult(accepted=accepted, rejected=len(errors), errors=errors, batch=digest)


def _as_text(value: Scalar) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def row_days(frame: pd.DataFrame, fallback: str, oldest: pd.Timestamp) -> pd.Series:
    """The UTC day each row claims (ISO or epoch ms). Unparseable rows, and rows older than `oldest` (no client may
    create raw partitions for arbitrary past days), go to `fallback`, where the rules reject them (outside_day)."""
    text = frame[s.TS].astype(object)
    numeric = pd.to_numeric(text, errors="coerce")
    iso = pd.to_datetime(text.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
    # Beyond ±9e12 ms (year 2255) nanoseconds overflow int64. Only in-range values are converted, as integers:
    # pandas' float path multiplies NaNs too and raises under a numpy error state set elsewhere in the process.
    in_range = numeric.abs() < 9e12
    epoch = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    epoch[in_range] = pd.to_datetime(numeric[in_range].round().astype("int64"), unit="ms", utc=True)
    claimed = iso.fillna(epoch)
    return claimed.where(claimed >= oldest).dt.strftime("%Y-%m-%d").fillna(fallback)


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
    def check(credentials: Credentials) -> None:
        if token is None:
            return
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(settings: Settings, token: str | None, clock: Clock = utc_now) -> FastAPI:
    """The Daily Mix API over one data root. `token=None` means unauthenticated (local development only)."""
    service = Service(settings, clock)
    # POSTs wait in threads for their intake pass; their own pool keeps them from starving the reads' pool.
    intake_threads = anyio.CapacityLimiter(INTAKE_THREADS)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await anyio.to_thread.run_sync(service.open)
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
        result = await anyio.to_thread.run_sync(service.ingest, batch.events, limiter=intake_threads)
        return JSONResponse(result.model_dump(), status_code=422 if result.rejected else 202)

    @v1.get("/users/{user_id}/features")
    def features(user_id: UserId) -> dict[str, Any]:
        """Current online features: last-10 interactions (24 h TTL, per interaction) and genre affinity."""
        return service.features(user_id)

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
    from pipeline.config import load_settings

    token = os.environ.get("DAILYMIX_API_TOKEN") or None
    if token is None and os.environ.get(INSECURE_DEV) != "1":
        raise RuntimeError("DAILYMIX_API_TOKEN is not set; refusing to serve without auth")
    return create_app(load_settings(), token)
