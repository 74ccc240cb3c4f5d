"""Coalescing concurrent writes: one flush for everything that arrived while the previous flush ran."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    item: T
    woken: threading.Condition  # on the coalescer's lock: notified when done, or when it is to lead the next flush
    done: bool = False
    error: BaseException | None = None


class Coalescer(Generic[T]):
    """Runs `flush(items)` for items submitted from many threads: one flush at a time, each taking every item
    queued so far. `submit` returns only after a flush holding its item has completed (or raises that flush's
    error), so a caller may acknowledge its request as soon as `submit` returns.

    There is no thread of its own (leader/follower): a submitter whose item is still queued when no flush is
    running flushes the whole queue. Under no contention a flush holds one item; under load, everything that
    queued up during the previous flush, so the per-flush cost is shared instead of serialised. A finished flush
    wakes only its own submitters and the first one still queued (the next leader), not every waiting thread: with
    dozens of requests waiting, waking them all on every flush cost more than the flush.
    """

    def __init__(self, flush: Callable[[list[T]], None]) -> None:
        self._flush = flush
        self._lock = threading.Lock()
        self._queue: list[_Pending[T]] = []
        self._flushing = False
        self.flushes = 0  # how many flushes ran (diagnostics, tests)

    @property
    def waiting(self) -> int:
        """Items queued for the next flush."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T) -> None:
        with self._lock:
            pending = _Pending(item, threading.Condition(self._lock))
            self._queue.append(pending)
            while not pending.done:
                if self._flushing:
                    pending.woken.wait()
                else:
                    self._lead()
        if pending.error is not None:
            raise pending.error

    def _lead(self) -> None:
        """Flush the queue outside the lock (others keep queueing), then wake its submitters and the next leader.
        Holds the lock."""
        batch, self._queue, self._flushing = self._queue, [], True
        self._lock.release()
        error = None
        try:
            self._flush([p.item for p in batch])
        except BaseException as caught:  # every request of the batch fails with it; none is acknowledged
            error = caught
        finally:
            self._lock.acquire()
            for pending in batch:
                pending.done, pending.error = True, error
                pending.woken.notify()
            self._flushing = False
            self.flushes += 1
            if self._queue:
                self._queue[0].woken.notify()
