"""Progress for long CLI work: a bar with rate and ETA on a terminal, plain lines otherwise.

Log files and CI see a few plain lines instead of carriage-return noise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", stream: TextIO | None = None,
             lines: int = 10) -> Iterator[T]:
    """Yield `items`, showing progress on `stream` (stderr by default).

    On a TTY: a tqdm bar. Otherwise about `lines` plain lines `desc: i/total (rate/s, ETA s)`.
    """
    out = stream or sys.stderr
    total = total if total is not None else _length(items)
    if out.isatty():
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, file=out, dynamic_ncols=True)
        return
    yield from _plain(items, total, desc, out, lines)


def _plain(items: Iterable[T], total: int | None, desc: str, out: TextIO, lines: int) -> Iterator[T]:
    start = time.perf_counter()
    step = max(1, (total or 0) // max(1, lines)) if total else 1
    for done, item in enumerate(items, start=1):
        yield item
        if done % step == 0 or done == total:
            elapsed = time.perf_counter() - start
            rate = done / elapsed if elapsed > 0 else float("inf")
            eta = f", ETA {(total - done) / rate:.0f} s" if total and rate > 0 else ""
            print(f"{desc}: {done}/{total if total else '?'} ({rate:.1f}/s{eta})", file=out, flush=True)


def _length(items: Iterable) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
