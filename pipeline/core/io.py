"""Atomic file writes: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import pandas as pd


def _atomic(path: Path, write, durable: bool = False) -> Path:
    """Write to a temporary file next to `path`, then rename it over `path`. `durable` also flushes the file and
    the directory entry to disk before returning (survives a power cut, not only a crash of the process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        if durable:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return path


def _fsync(path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_parquet(frame: pd.DataFrame, path: Path, durable: bool = False) -> Path:
    return _atomic(Path(path), lambda tmp: frame.to_parquet(tmp, index=False), durable)


def atomic_write_table(table, path: Path, durable: bool = False) -> Path:
    """An Arrow table (pandas metadata included, if it has any) as one Parquet file; `durable`: on disk on return."""
    import pyarrow.parquet as pq

    return _atomic(Path(path), lambda tmp: pq.write_table(table, tmp), durable)


def atomic_write_parquet_blocks(frames: Iterable[pd.DataFrame], path: Path, empty: pd.DataFrame,
                                writing: Callable[[], AbstractContextManager] = nullcontext) -> Path:
    """Stream frames of one schema into one Parquet file (a row group each), atomically; `empty` if none.

    Only one frame is held at a time, so memory does not grow with the rows written. `writing`, if given,
    makes the context entered around each write (a timer)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(tmp: Path) -> None:
        writer = None
        try:
            for frame in frames:
                if frame.empty:
                    continue
                with writing():
                    table = pa.Table.from_pandas(frame, preserve_index=False, schema=writer.schema if writer else None)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            empty.to_parquet(tmp, index=False)

    return _atomic(Path(path), write)


def atomic_write_json(payload: Any, path: Path, durable: bool = False) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    return _atomic(Path(path), lambda tmp: tmp.write_text(text + "\n"), durable)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's values and schema (column names and dtypes): a schema change is new content."""
    digest = hashlib.sha256(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
