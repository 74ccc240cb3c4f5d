"""The Coalescer: every item flushed exactly once, submit returns only after its flush, waiting items share a flush."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.serve.coalesce import Coalescer

WAIT_S = 10.0  # a bound on waiting for other threads, never a measured time


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


class Recorder:
    """A flush that records its batches; the first one can be held until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.flushed: set[int] = set()
        self.started, self.release = threading.Event(), threading.Event()
        if not hold_first:
            self.release.set()
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> None:
        self.started.set()
        self.release.wait(WAIT_S)
        with self.lock:
            self.batches.append(list(items))
            self.flushed.update(items)


def test_items_waiting_during_a_flush_share_the_next_one() -> None:
    recorder = Recorder(hold_first=True)
    coalescer = Coalescer(recorder)
    returned: list[tuple[int, bool]] = []

    def submit(item: int) -> None:
        coalescer.submit(item)
        returned.append((item, item in recorder.flushed))  # its flush had completed when submit returned

    with ThreadPoolExecutor(12) as pool:
        first = pool.submit(submit, 0)
        assert recorder.started.wait(WAIT_S)  # item 0 is being flushed, alone
        rest = [pool.submit(submit, i) for i in range(1, 12)]
        wait_for(lambda: coalescer.waiting == 11, "the other items to queue")
        recorder.release.set()
        for future in [first, *rest]:
            future.result(WAIT_S)
    assert recorder.batches[0] == [0]
    assert sorted(recorder.batches[1]) == list(range(1, 12)) and len(recorder.batches) == 2
    assert coalescer.flushes == 2
    assert sorted(returned) == [(i, True) for i in range(12)]


def test_many_threads_lose_no_item_and_flush_none_twice() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(coalescer.submit, range(500)))
    flushed = [item for batch in recorder.batches for item in batch]
    assert sorted(flushed) == list(range(500))
    assert coalescer.flushes == len(recorder.batches) <= 500


def test_a_failed_flush_fails_each_of_its_items_and_the_next_flush_runs() -> None:
    calls = []

    def flush(items: list[str]) -> None:
        calls.append(items)
        if "bad" in items:
            raise OSError("disk full")

    coalescer = Coalescer(flush)
    with pytest.raises(OSError, match="disk full"):
        coalescer.submit("bad")
    coalescer.submit("good")
    assert calls == [["bad"], ["good"]]


def test_async_submitters_share_a_flush_without_a_thread_each_and_get_its_error() -> None:
    recorder = Recorder(hold_first=True)
    coalescer = Coalescer(recorder)

    async def main() -> None:
        first = asyncio.create_task(coalescer.submit_async(0))
        assert await asyncio.to_thread(recorder.started.wait, WAIT_S)  # item 0 is being flushed, alone
        rest = [asyncio.create_task(coalescer.submit_async(i)) for i in range(1, 12)]
        await asyncio.to_thread(wait_for, lambda: coalescer.waiting == 11, "the other items to queue")
        recorder.release.set()
        await asyncio.wait_for(asyncio.gather(first, *rest), WAIT_S)
        assert all(i in recorder.flushed for i in range(12))  # each flush had completed when its await returned

    asyncio.run(main())
    assert recorder.batches == [[0], list(range(1, 12))] and coalescer.flushes == 2

    def flush(items: list[str]) -> None:
        if "bad" in items:
            raise OSError("disk full")

    failing = Coalescer(flush)
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(failing.submit_async("bad"))
    asyncio.run(failing.submit_async("good"))  # the next flush runs, for another event loop too
