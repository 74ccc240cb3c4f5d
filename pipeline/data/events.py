"""The raw event log's one owner: a part's name, columns and dtypes, the dedupe keys, durable writes and the readers.

A day's events are the Parquet parts in `raw/events/date=D/`, each holding `schema.EVENT_COLUMNS` with
`schema.EVENT_DTYPES`; the explore-policy rows of a part are copied, under the same name, to `raw/exploration/
date=D/` for off-policy evaluation. A part is written atomically and fsync'd: readers see a whole part or none, and
a stored part survives a power cut. An event is a duplicate when a part of its day already holds its key
(`validation.events.DUPLICATE_KEY`). Two doors write parts, both through here:

- `dailymix ingest` (`pipeline.data.ingest`): one part per source file, `<stem>-<where>-<what>.parquet`
  (`FileSource`): stem = the file's, made safe and short (`safe_stem`), where = the file's path, what = its bytes,
  so files of the same name from different places never share a part, and the same file ingested again rewrites
  its own part.
- `POST /v1/events` (`pipeline.serve`): one part per intake pass and day, `api-<digest of its rows>.parquet`; its
  Parquet metadata (`BATCHES`) names the API batches it holds, so a retried batch is recognised.

Bad rows go to `quarantine/events/date=D/`, as read (text), with why and where (`write_quarantine`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core import schema as s
from pipeline.core.io import atomic_write_table
from pipeline.core.paths import Layout
from validation.events import DUPLICATE_KEY, Key

PART_SUFFIX = ".parquet"
API_PREFIX = "api-"
DIGEST_CHARS = 16
BATCHES = b"dailymix.batches"  # Parquet metadata of an API part: [[batch digest, rows], ...] in row order
TEXT = pd.StringDtype("pyarrow")  # events as read from a file, before validation: every value as text


def empty_events() -> pd.DataFrame:
    """No events, with the columns and dtypes of a stored part."""
    return pd.DataFrame({c: pd.Series(dtype=s.EVENT_DTYPES[c]) for c in s.EVENT_COLUMNS})


RAW_SCHEMA = pa.Schema.from_pandas(empty_events(), preserve_index=False)  # the part format, pandas metadata included


# --- naming -------------------------------------------------------------------------------------


STEM_CHARS = 100  # of a part name's stem: the name, its digests and a temporary file's affixes stay far below 255 bytes
UNSAFE_IN_STEM = re.compile(r"[^A-Za-z0-9._-]")


def safe_stem(path: str | Path) -> str:
    """A file's stem as part and run names carry it: each character outside [A-Za-z0-9._-] (a control character, a
    space, a slash, non-ASCII) becomes "_", a leading "." or "_" (a name readers of a folder skip as hidden) is
    dropped, and it is cut to `STEM_CHARS`. Two files may share it: a part name's path digest tells them apart."""
    stem = UNSAFE_IN_STEM.sub("_", Path(path).stem).lstrip("._")[:STEM_CHARS]
    return stem or "events"


@dataclass(frozen=True)
class FileSource:
    """An event file as the store names its parts: `<stem>-<where>-<what>.parquet`. `where` is a digest of the file's
    path (relative to the data root when inside it, so a moved root keeps its names), `what` one of its bytes; the
    stem is `safe_stem`'s, there for people only: a file's parts are told by `where`."""

    path: Path
    where: str

    @classmethod
    def of(cls, path: str | Path, layout: Layout) -> FileSource:
        resolved, home = Path(path).resolve(), layout.home.resolve()
        place = resolved.relative_to(home) if resolved.is_relative_to(home) else resolved
        return cls(Path(path), _digest(place.as_posix().encode()))

    @property
    def prefix(self) -> str:
        return f"{safe_stem(self.path)}-{self.where}-"

    def part_name(self) -> str:
        """The part of the file as it is now (read its bytes once it is known to be readable)."""
        with self.path.open("rb") as fh:
            what = hashlib.file_digest(fh, "sha256").hexdigest()[:DIGEST_CHARS]
        return f"{self.prefix}{what}{PART_SUFFIX}"

    def owns(self, name: str) -> bool:
        """Whether a part of that name holds rows of this file (of any version of it, under any stem it was stored
        with): the name ends in `-<where>-<what>.parquet`."""
        tail = len(PART_SUFFIX) + DIGEST_CHARS
        return (name.endswith(PART_SUFFIX) and len(name) > tail + DIGEST_CHARS + 2
                and name[:-tail].endswith(f"-{self.where}-"))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]


def api_part_name(day: str, rows: Sequence[Mapping[str, object]]) -> str:
    """An intake pass's part, named after its rows (each stored once, so no two passes share a name)."""
    text = json.dumps([day, [[row[c] for c in s.EVENT_COLUMNS] for row in rows]])
    return f"{API_PREFIX}{_digest(text.encode())}{PART_SUFFIX}"


def batch_quarantine_name(batch_digest: str) -> str:
    """The quarantine part of one API batch (a retry of the batch rewrites it)."""
    return f"{API_PREFIX}{batch_digest}{PART_SUFFIX}"


def part_names(folder: Path) -> list[str]:
    """The names of the parts in a day's folder, sorted; none when the folder does not exist."""
    names = os.listdir(folder) if folder.is_dir() else []  # (a glob's per-name matching costs more, per part)
    return sorted(n for n in names if n.endswith(PART_SUFFIX))


# --- writing ------------------------------------------------------------------------------------


def frame_table(events: pd.DataFrame) -> pa.Table:
    """Validated events (columns and dtypes of `schema.EVENT_DTYPES`) in the part format."""
    return pa.Table.from_pandas(events[list(s.EVENT_COLUMNS)].reset_index(drop=True), schema=RAW_SCHEMA,
                                preserve_index=False)


def rows_table(rows: Sequence[Mapping[str, object]], batches: Sequence[tuple[str, int]]) -> pa.Table:
    """Accepted rows (values as `validation.events.validate_rows` gives them: ts in ns) in the part format;
    `batches` names the API batches of its rows, in row order."""
    schema = RAW_SCHEMA.with_metadata({**RAW_SCHEMA.metadata, BATCHES: json.dumps(list(batches)).encode()})
    return pa.Table.from_pydict({c: [row[c] for row in rows] for c in s.EVENT_COLUMNS}, schema=schema)


def write_part(layout: Layout, day: str, name: str, events: pa.Table) -> Path:
    """Store a part of `day` durably, and its explore-policy rows in the exploration partition (a stale copy of an
    earlier part of that name is removed when it has none). Returns the raw part's path."""
    target = atomic_write_table(events, layout.raw_events(day) / name, durable=True)
    _write_explore_rows(events, layout.exploration(day) / name)
    return target


def write_exploration(accepted: pd.DataFrame, target: Path) -> Path | None:
    """The explore-policy rows of validated events, stored at `target`; none removes a stale file there."""
    return _write_explore_rows(frame_table(accepted), target)


def _write_explore_rows(events: pa.Table, target: Path) -> Path | None:
    explore = events.filter(pc.equal(events[s.POLICY], s.POLICY_EXPLORE))  # a null policy is not explore
    if explore.num_rows == 0:
        target.unlink(missing_ok=True)
        return None
    return atomic_write_table(explore.replace_schema_metadata(RAW_SCHEMA.metadata), target, durable=True)


def remove_source_parts(layout: Layout, day: str, source: FileSource, keep: str | None = None) -> None:
    """Remove the parts of `day` holding rows of `source` (but `keep`), with their exploration copies and quarantined
    rows; the parts of every other source stay as they are."""
    for folder in (layout.raw_events(day), layout.exploration(day), layout.quarantine(day)):
        for name in part_names(folder):
            if source.owns(name) and name != keep:
                (folder / name).unlink(missing_ok=True)


def write_quarantine(rows: pd.DataFrame, reasons: pd.Series, source: str, target: Path) -> Path | None:
    """Rows as read (text), plus why (`reasons`) and where (`source`, their 1-based index); no rows means no
    (stale) quarantine part at `target`."""
    if rows.empty:
        target.unlink(missing_ok=True)
        return None
    quarantine = rows.astype(TEXT)
    quarantine[s.QUARANTINE_REASON] = reasons.astype(TEXT)
    quarantine[s.SOURCE_FILE] = pd.Series(source, index=rows.index, dtype=TEXT)
    quarantine[s.SOURCE_ROW] = rows.index.to_numpy(dtype=np.int64)
    return atomic_write_table(pa.Table.from_pandas(quarantine.reset_index(drop=True), preserve_index=False), target,
                              durable=True)


# --- dedupe keys --------------------------------------------------------------------------------


def stored_keys(layout: Layout, day: str, excluding: Callable[[str], bool]) -> pd.DataFrame | None:
    """The duplicate keys of `day`'s parts whose name `excluding` does not claim; None when there are none."""
    folder = layout.raw_events(day)
    parts = [folder / name for name in part_names(folder) if not excluding(name)]
    if not parts:
        return None
    return pd.concat([pd.read_parquet(p, columns=list(DUPLICATE_KEY)) for p in parts], ignore_index=True)


def part_keys_by_batch(path: Path) -> list[tuple[str | None, list[Key]]]:
    """A part's duplicate keys (ts in ns), split by the API batch they came from (None: not from the API). A part
    of the earlier one-part-per-batch format has no `BATCHES` metadata and is named after its batch."""
    table = pq.read_table(path, columns=list(DUPLICATE_KEY))
    stamps = pd.to_datetime(table.column(s.TS).to_pandas(), utc=True).astype("datetime64[ns, UTC]")
    keys = list(zip(table.column(s.USER_ID).to_pylist(), table.column(s.TRACK_ID).to_pylist(),
                    stamps.array.asi8.tolist(), strict=True))
    listed = (table.schema.metadata or {}).get(BATCHES)
    if listed is None:
        name = path.name.removesuffix(PART_SUFFIX)
        return [(name.removeprefix(API_PREFIX) if name.startswith(API_PREFIX) else None, keys)]
    out, at = [], 0
    for digest, count in json.loads(listed):
        out.append((digest, keys[at:at + count]))
        at += count
    return out


# --- reading ------------------------------------------------------------------------------------


def read_raw_events(layout: Layout, days: list[str]) -> pd.DataFrame:
    """All raw parts of `days` as one frame with EVENT_DTYPES, sorted by (ts, user_id, track_id)."""
    return _read_parts([layout.raw_events(day) / name for day in days for name in part_names(layout.raw_events(day))])


def read_exploration_events(layout: Layout, days: list[str]) -> pd.DataFrame:
    """The exploration partition of `days` (explore-policy events only), like read_raw_events."""
    return _read_parts([layout.exploration(day) / name for day in days
                        for name in part_names(layout.exploration(day))])


def _read_parts(parts: list[Path]) -> pd.DataFrame:
    frames = [pd.read_parquet(p, columns=list(s.EVENT_COLUMNS)) for p in parts]
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_events()
    events = pd.concat(frames, ignore_index=True).astype(s.EVENT_DTYPES)
    return events.sort_values([s.TS, s.USER_ID, s.TRACK_ID], kind="mergesort", ignore_index=True)
