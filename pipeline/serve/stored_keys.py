"""The duplicate keys already stored for each day, as an API process knows them: each raw part read once, the folder
listed again only when it may have changed, and which API batches each part holds."""

from __future__ import annotations

import os
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.events import part_keys_by_batch, part_names
from validation.events import Key


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
        self._keys: dict[Path, set[Key]] = {}
        self._parts: dict[Path, set[str]] = {}
        self._batches: dict[Path, dict[str, list[str]]] = {}  # batch digest -> the parts holding its rows
        self._listed: dict[Path, tuple[int, int, float]] = {}  # generation, mtime_ns, monotonic time of listing

    def refresh(self, folder: Path, generation: int) -> None:
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

    def holds(self, folder: Path, digest: str) -> bool:
        """Whether a part of the folder holds rows of the API batch `digest` (it is a retry)."""
        return digest in self._batches.get(folder, {})

    def own(self, folder: Path, digest: str) -> frozenset[Key]:
        """The keys the API batch `digest` stored in the folder (read back from its parts: retries are rare)."""
        return frozenset(key for name in self._batches.get(folder, {}).get(digest, [])
                         for d, keys in part_keys_by_batch(folder / name) if d == digest for key in keys)

    def existing(self, folder: Path, own: frozenset[Key], staged: set[Key]) -> Container[Key]:
        """The keys a batch's rows are duplicates of: stored ones except its own (a retry), and those staged by this
        pass."""
        return _Existing(self._keys.setdefault(folder, set()), own, staged)

    def record(self, folder: Path, keys: set[Key]) -> None:
        """Add the keys of rows this process just stored, so none is read back."""
        self._keys.setdefault(folder, set()).update(keys)

    def holding(self, folder: Path, name: str, digests: list[str], generation: int) -> None:
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


def _mtime_ns(folder: Path) -> int:
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
