"""Coalescing concurrent writes: one flush for everything that arrived while the previous flush ran."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    item: T
    loop: asyncio.AbstractEventLoop | None = None  # an async submitter's loop (None: a blocked thread)
    future: asyncio.Future | None = None
    finished: threading.Event | None = None
    error: BaseException | None = None


class Coalescer(Generic[T]):
    """Runs `flush(items)` for items submitted from many threads or coroutines: one flush at a time, each taking
    every item queued so far. `submit` (blocking) and `submit_async` (awaitable) return only after a flush holding
    their item has completed (or raise that flush's error), so a caller may acknowledge its request then.

    Flushes run on a thread of the coalescer's own, started on first use. Under no contention a flush holds one
    item; under load, everything that queued up during the previous flush, so the per-flush cost is shared instead of
    serialised. An async submitter costs no thread while it waits, and a flush wakes each event loop once, however
    many of its requests the flush held: with hundreds of requests a second, handing each one to a thread and back
    cost more than its share of the flush.
    """

    def __init__(self, flush: Callable[[list[T]], None]) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._queue: list[_Pending[T]] = []
        self._thread: threading.Thread | None = None
        self.flushes = 0  # how many flushes ran (diagnostics, tests)

    @property
    def waiting(self) -> int:
        """Items queued for the next flush."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T) -> None:
        pending = _Pending(item, finished=threading.Event())
        self._enqueue(pending)
        pending.finished.wait()
        if pending.error is not None:
            raise pending.error

    async def submit_async(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        pending = _Pending(item, loop=loop, future=loop.create_future())
        self._enqueue(pending)
        await pending.future

    def _enqueue(self, pending: _Pending[T]) -> None:
        with self._lock:
            self._queue.append(pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="coalescer", daemon=True)
                self._thread.start()
            self._queued.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._queued.wait()
                batch, self._queue = self._queue, []
            error = None
            try:
                self._flush([p.item for p in batch])
            except BaseException as caught:  # every request of the batch fails with it; none is acknowledged
                error = caught
            with self._lock:
                self.flushes += 1
            _finish(batch, error)


def _finish(batch: list[_Pending], error: BaseException | None) -> None:
    """Release a flushed batch's submitters: blocked threads one by one, each event loop with one wake-up."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
    for pending in batch:
        pending.error = error
        if pending.loop is None:
            pending.finished.set()
        else:
            by_loop.setdefault(pending.loop, []).append(pending.future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, futures, error)


def _settle(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        if not future.done():  # a cancelled request (client gone) has nothing left to answer
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
