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

import gc
import hmac
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from pipeline.core.config import Settings
from pipeline.publish.files import store_health
from pipeline.serve.intake import repeated_key_rows
from pipeline.serve.models import BatchResult, EventBatch
from pipeline.serve.refresh import published_mixes
from pipeline.serve.service import Service
from pipeline.serve.state import Clock, utc_now

DAY_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"  # ASCII digits: Python's \d also takes other scripts' digits
MAX_ID = 2**63 - 1  # ids are int64 everywhere downstream
DAMAGED = {"description": "no version of the day's publication reads (docs/operations.md)"}


def digits_only(value: object) -> object:
    """A user id in a path is ASCII digits and nothing else: int() would also read "1_0" as 10, " 1" and "+1" as 1."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("a user id is written in digits 0-9 only")
    return value


UserId = Annotated[int, BeforeValidator(digits_only), Path(ge=0, le=MAX_ID)]
# Module level: annotations are strings here (PEP 563), so FastAPI resolves them in the module's namespace.
Credentials = Annotated[HTTPAuthorizationCredentials | None,
                        Depends(HTTPBearer(auto_error=False, description="DAILYMIX_API_TOKEN"))]
Day = Annotated[str | None, Query(pattern=DAY_PATTERN, description="publication date (default: latest)")]


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


class AnswerHeaders:
    """ASGI middleware: no answer is sniffed for another content type or kept by a cache (answers are per user, and
    change with each night and each play)."""

    HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


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

    # No interactive docs (/docs, /redoc): they load scripts from a CDN into the API's origin. The schema stays open
    # at /openapi.json, like /healthz; everything else needs the token.
    app = FastAPI(title="Daily Mix", version="1", description=__doc__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(AnswerHeaders)  # outermost: a 413 from BodyLimit carries the headers too
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(bearer_guard(token))],
                   responses={401: {"description": "missing or wrong bearer token"}})

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """Liveness, no auth: which publication readers get by default, and what is damaged in the publication store
        ("degraded": readers are served an older version or day meanwhile; docs/operations.md)."""
        latest, problems = store_health(settings)
        return {"status": "degraded" if problems else "ok", "latest_published": latest, "problems": problems}

    @v1.get("/users/{user_id}/mixes", responses={404: {"description": "nothing published"}, 503: DAMAGED})
    def mixes(user_id: UserId, date: Day = None) -> dict[str, Any]:
        """The published mixes (stable contract of `dailymix mixes --json`): titles, tracks, discovery, lineage."""
        return published_mixes(settings, user_id, date)

    @v1.post("/events", status_code=202, response_model=BatchResult,
             responses={422: {"model": BatchResult, "description": "some rows rejected (the rest accepted)"},
                        413: {"description": "too many rows or too large a body"}})
    async def events(batch: EventBatch, request: Request) -> JSONResponse:
        """Validate with the ingest rules, append good rows to the raw log, push them online; bad rows → reasons (an
        event naming a key twice: `malformed_line`, as in a file)."""
        if len(batch.events) > settings.api.max_batch_rows:
            raise HTTPException(413, f"{len(batch.events)} events > {settings.api.max_batch_rows} per batch")
        try:
            malformed = repeated_key_rows(await request.body())
        except (ValueError, RecursionError) as error:
            raise HTTPException(422, str(error)) from None
        result = await service.ingest_async(batch.events, malformed)
        return JSONResponse(result.model_dump(), status_code=422 if result.rejected else 202)

    @v1.get("/users/{user_id}/features", response_model=dict[str, Any])
    async def features(user_id: UserId) -> JSONResponse:
        """Current online features: last-10 interactions (24 h TTL, per interaction) and genre affinity."""
        # In the event loop, not a thread: two point reads (sub-millisecond) cost less than the hand-over to a thread
        # and back, the largest cost of this request under load.
        return JSONResponse(service.features(user_id))

    @v1.post("/users/{user_id}/mixes/refresh", responses={404: {"description": "nothing published"}, 503: DAMAGED})
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
