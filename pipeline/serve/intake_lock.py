"""One intake pass at a time across every process serving a data root (`serve --workers N`), and a count of the raw
parts their passes wrote."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def hold_intake_lock(home: Path) -> Iterator[IntakeLock]:
    """One holder at a time across the processes serving the data root at `home`: an intake pass then sees every
    part already stored and no worker's read-merge-write of last-10 overwrites another's."""
    path = home / "features" / "intake.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield IntakeLock(fd)
    finally:
        os.close(fd)  # releases the lock
