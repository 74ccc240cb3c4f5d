"""Atomic file writes: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    return _atomic(Path(path), lambda tmp: frame.to_parquet(tmp, index=False))


def atomic_write_json(payload: Any, path: Path) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    return _atomic(Path(path), lambda tmp: tmp.write_text(text + "\n"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
