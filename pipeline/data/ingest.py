"""Ingest a day's play events: validate every row, store the good ones, quarantine the rest.

One source file becomes one raw part, stored by `pipeline.data.events` and named after the file's
path and bytes, and at most one quarantine part named after the file's stem; both are written
atomically, so a reader never sees half a file. Re-ingesting a file rewrites its own part (an earlier
version of the file is replaced once the new one is stored); a file from elsewhere never touches it.
A batch with too many bad rows is refused as a whole: a partial day would silently bias everything
trained on it.
"""

from __future__ import annotations

import codecs
import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core import schema as s
from pipeline.core.io import frame_digest
from pipeline.core.paths import Layout
from pipeline.data.events import (
    TEXT,
    FileSource,
    frame_table,
    remove_source_parts,
    safe_stem,
    stored_keys,
    write_part,
    write_quarantine,
)
from validation.events import REQUIRED_COLUMNS, day_bounds, missing_columns, readable_text, validate_events

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TOP_REASONS = 3


# A JSONL line that is not one JSON object, or a CSV record of another width than the header, is quarantined with
# this reason; the column of that name keeps why and the line's text (up to MALFORMED_TEXT_LIMIT characters), so
# nothing sent is lost.
MALFORMED_LINE = "malformed_line"
MALFORMED_TEXT_LIMIT = 2_000


class IngestError(Exception):
    """A file was refused; `report` is set when rows were read and judged."""

    def __init__(self, message: str, report: IngestReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class IngestReport:
    source: str  # the path as given
    day: str
    rows_read: int
    accepted: int  # rows passing every rule (not written if the batch was refused: raw_path is None)
    quarantined: int
    reasons: dict[str, int]  # rule name -> rows failing it, most common first
    raw_path: Path | None
    quarantine_path: Path | None

    def summary(self) -> str:
        """One line for logs and the CLI."""
        line = (
            f"{Path(self.source).name} {self.day}: {self.rows_read} read, {self.accepted} accepted, "
            f"{self.quarantined} quarantined"
        )
        if self.reasons:
            line += " (" + ", ".join(f"{name} {count}" for name, count in self.reasons.items()) + ")"
        return line


# --- reading ------------------------------------------------------------------------------------


def read_events_file(path: Path) -> pd.DataFrame:
    """Read an event file with every column as text (NA for empty), in file order.

    The index is the 1-based source row (header excluded; for JSONL the line number), so
    quarantined rows can be traced back to the file. Types are not trusted here: judging them
    is validation's job, and the quarantine must show values exactly as the producer sent them
    (bytes that are not UTF-8 and lone surrogates as backslash escapes: `readable_text`).
    Raises IngestError for a file that cannot be read at all (missing, a directory, no access).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise IngestError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    if suffix in CSV_SUFFIXES:
        frame = _read_csv(path)
    elif suffix in JSONL_SUFFIXES:
        return _read_jsonl(path)
    elif suffix in PARQUET_SUFFIXES:
        frame = _read_parquet(path)
    else:
        supported = ", ".join((*CSV_SUFFIXES, *JSONL_SUFFIXES, *PARQUET_SUFFIXES))
        raise ValueError(f"{path}: unsupported event file type {path.suffix!r} (expected one of {supported})")
    frame.index = pd.RangeIndex(1, len(frame) + 1, name=s.SOURCE_ROW)
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    _refuse_ambiguous_columns(path, _csv_header(path))
    try:
        frame = pd.read_csv(path, dtype=TEXT, keep_default_na=False, na_values=[""], encoding="utf-8-sig",
                            encoding_errors="backslashreplace")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except pd.errors.ParserError:
        frame = _read_csv_records(path)  # a row of another width: find it, keep the rest
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path.name}: not a readable CSV file ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _csv_header(path: Path) -> list[str]:
    """The names of the CSV header as written (the fast reader renames a repeated one)."""
    with path.open(encoding="utf-8-sig", errors="backslashreplace", newline="") as handle:
        return next(csv.reader(handle), [])


def _refuse_ambiguous_columns(path: Path, names: list[str]) -> None:
    """A column named twice (as written, or once its spaces are stripped) leaves no way to tell which value a row
    holds: the file is refused, naming the column, rather than one of the two silently read."""
    seen: set[str] = set()
    for name in (readable_text(str(n)).strip() for n in names):
        if name in seen:
            raise IngestError(f"{path.name}: column {name[:80]!r} appears more than once")
        seen.add(name)


def _read_csv_records(path: Path) -> pd.DataFrame:
    """The CSV record by record: a record with more fields than the header is a row whose fields are empty and whose
    `MALFORMED_LINE` says so, with its text; the others are read as the fast reader reads them."""
    with path.open(encoding="utf-8-sig", errors="backslashreplace", newline="") as handle:
        records = list(csv.reader(handle))
    if not records:
        return pd.DataFrame()
    header, rows = [name.strip() for name in records[0]], []
    for record in filter(None, records[1:]):  # blank lines are skipped, as the fast reader skips them
        if len(record) <= len(header):  # a short record's missing fields are empty, as the fast reader reads them
            rows.append({name: value or None for name, value in zip(header, record, strict=False)})
        else:
            text = readable_text(",".join(record))[:MALFORMED_TEXT_LIMIT]
            rows.append({MALFORMED_LINE: f"{len(record)} fields where the header has {len(header)}: {text}"})
    frame = pd.DataFrame(rows, columns=[*header, *([MALFORMED_LINE] if any(MALFORMED_LINE in r for r in rows)
                                                   else [])], dtype=object)
    return frame.astype(TEXT)


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; blank lines are skipped but still count for line numbers. A value that is not a
    string, number, boolean or null (an object, a list) is kept as its JSON text, which no rule accepts.

    A line that is not one JSON object (broken JSON, nested too deeply, an array) is a row too: its fields are
    empty and `MALFORMED_LINE` holds why and the line's text, so it is quarantined and the others are judged as
    usual. A file with no readable line at all is refused, naming the first bad line."""
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8).splitlines()
    lines = [line.decode("utf-8", "backslashreplace") for line in raw]  # line numbers as the bytes count them
    numbers = [i for i, line in enumerate(lines, start=1) if line.strip()]
    try:
        records = json.loads("[" + ",".join(lines[i - 1] for i in numbers) + "]", object_pairs_hook=json_object)
    except (ValueError, RecursionError):  # ValueError: broken JSON, or an integer of more digits than Python reads
        records = [_json_line(lines[i - 1]) for i in numbers]  # one bad line: find it, keep the rest
    problems = [_line_problem(record) for record in records]
    if numbers and all(problems):
        raise IngestError(f"{path.name}: {_first_bad_json_line(lines, numbers)}")
    rows = [{MALFORMED_LINE: f"{problem}: {readable_text(lines[number - 1])[:MALFORMED_TEXT_LIMIT]}"} if problem
            else {readable_text(str(k)).strip(): _cell_text(v) for k, v in record.items()}
            for number, record, problem in zip(numbers, records, problems, strict=True)]
    frame = pd.DataFrame(rows, dtype=object).astype(TEXT) if rows else pd.DataFrame()
    frame.index = pd.Index(numbers, dtype=np.int64, name=s.SOURCE_ROW)
    return frame


class RepeatedKeys(dict):
    """A JSON object naming a key twice (as written, or once its spaces are stripped): which value it holds is
    anyone's guess (parsers differ), so a line that is one is malformed."""

    def __init__(self, pairs: list[tuple[str, object]], key: str) -> None:
        super().__init__(pairs)
        self.key = key


def json_object(pairs: list[tuple[str, object]]) -> dict:
    """`json.loads`'s object_pairs_hook for events: a `RepeatedKeys` when the object names a key twice."""
    seen: set[str] = set()
    for key, _ in pairs:
        name = readable_text(key).strip()
        if name in seen:
            return RepeatedKeys(pairs, name)
        seen.add(name)
    return dict(pairs)


def _json_line(line: str) -> object:
    """The line's JSON value, or the exception that says why it has none."""
    try:
        return json.loads(line, object_pairs_hook=json_object)
    except (ValueError, RecursionError) as exc:
        return exc


def _line_problem(record: object) -> str | None:
    if isinstance(record, RepeatedKeys):
        return f"not one event (key {record.key[:80]!r} given more than once)"
    if isinstance(record, dict):
        return None
    if isinstance(record, RecursionError):
        return "nested too deeply to be an event"
    if isinstance(record, json.JSONDecodeError):
        return f"not valid JSON ({record.msg})"
    if isinstance(record, ValueError):
        return f"not valid JSON ({_one_line(record)})"
    return "not a JSON object"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def _cell_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, dict | list):
        return readable_text(json.dumps(value))
    return readable_text(str(value))


def _first_bad_json_line(lines: list[str], numbers: list[int]) -> str:
    for number in numbers:
        if problem := _line_problem(_json_line(lines[number - 1])):
            return f"line {number} is {problem}"
    return "not a readable JSONL file"


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        _refuse_ambiguous_columns(path, pq.read_schema(path).names)
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{path.name}: not a readable Parquet file ({exc})") from exc
    columns = {name.strip(): _arrow_text(table.column(name)) for name in table.column_names}
    return pd.DataFrame({name: pd.Series(pd.arrays.ArrowStringArray(col)) for name, col in columns.items()})


def _arrow_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A Parquet column as text; float NaN is a null (pandas writes missing floats as NaN); string and binary
    values are read as UTF-8 (`_utf8_text`)."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    if _holds_bytes(column.type):
        return _utf8_text(column)
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        values = [None if v is None else str(v) for v in column.to_pylist()]
        return pa.chunked_array([pa.array(values, type=pa.string())])


def _holds_bytes(kind: pa.DataType) -> bool:
    return any(test(kind) for test in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                       pa.types.is_large_binary, pa.types.is_fixed_size_binary))


def _utf8_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """String or binary values as text: a Parquet writer need not check that a string column holds UTF-8, so bytes
    that are not become backslash escapes (as in CSV), which no rule accepts: the row is quarantined as sent and the
    file's other rows are judged as usual."""
    if pa.types.is_fixed_size_binary(column.type):
        return _decoded(column)
    as_bytes = pc.cast(column, pa.large_binary())  # string to bytes never fails; bytes to string checks UTF-8
    try:
        return pc.cast(as_bytes, pa.string())
    except pa.ArrowInvalid:
        return _decoded(as_bytes)


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    values = [None if v is None else v.decode("utf-8", "backslashreplace") for v in column.to_pylist()]
    return pa.chunked_array([pa.array(values, type=pa.string())])


# --- ingest -------------------------------------------------------------------------------------


def ingest_file(
    path: str | Path,
    day: str,
    layout: Layout,
    catalog: pd.DataFrame,
    *,
    max_bad_row_share: float = 0.01,
    as_of: pd.Timestamp | None = None,
    contract_root: Path | None = None,
) -> IngestReport:
    """Validate one event file for `day` and store it as raw part + quarantine part.

    Raises IngestError when more than `max_bad_row_share` of the rows are bad (after writing the
    quarantine part and removing this file's raw part), and for file-level problems (unreadable
    file, missing required column; this file's previous raw and quarantine parts are removed as
    stale). Raw parts of other files, whatever their name, are never touched. Raises ValueError
    for an unsupported file type, a malformed day or a threshold outside [0, 1]. The source file is never modified.

    With `contract_root`, the catalog and the accepted rows are also checked against the Great
    Expectations contracts (`validation.raw_suites`) in the GE project there, writing Data Docs; a
    failure raises IngestError before anything reaches raw, as it means the pandas rules and the
    declared contract disagree (or the catalog is broken). None skips it: GE costs seconds.
    """
    source = Path(path)
    day_bounds(day)  # a malformed day must not become a directory name
    if not 0 <= max_bad_row_share <= 1:  # NaN too: no share would ever be above it
        raise ValueError(f"the bad-row share must be a number in [0, 1], got {max_bad_row_share!r}")
    origin = FileSource.of(source, layout)
    frame = _check_columns(read_events_file(source), source)  # a refused file touches nothing stored before
    if contract_root is not None:
        _check_catalog_contract(catalog, source, day, contract_root)
    part = origin.part_name()
    quarantine_part = layout.quarantine(day) / part  # named like the raw part: files never share one
    durations = pd.Series(catalog[s.DURATION_MS].to_numpy(), index=catalog[s.TRACK_ID].to_numpy())
    accepted, reasons = validate_events(
        frame,
        day=day,
        catalog_track_ids=catalog[s.TRACK_ID].to_numpy(),
        track_durations_ms=durations,
        as_of=as_of,
        existing_keys=stored_keys(layout, day, excluding=origin.owns),
    )
    reasons = _with_malformed_lines(frame, reasons)
    bad = (reasons != "").to_numpy()
    stats = _reason_stats(reasons[bad])
    quarantine_path = write_quarantine(frame[bad], reasons[bad], str(path), quarantine_part)
    report = IngestReport(
        source=str(path),
        day=day,
        rows_read=len(frame),
        accepted=len(accepted),
        quarantined=int(bad.sum()),
        reasons={name: count for name, (count, _) in stats.items()},
        raw_path=layout.raw_events(day) / part,
        quarantine_path=quarantine_path,
    )
    share = report.quarantined / report.rows_read if report.rows_read else 0.0
    if share > max_bad_row_share:
        refused = replace(report, raw_path=None)
        raise IngestError(_threshold_message(refused, share, max_bad_row_share, stats), refused)
    if contract_root is not None and (broken := _events_contract_problem(accepted, report, durations, as_of,
                                                                         contract_root)):
        raise IngestError(broken, replace(report, raw_path=None))
    write_part(layout, day, part, frame_table(accepted))
    remove_source_parts(layout, day, origin, keep=part)  # an earlier version of this file
    return report


def _with_malformed_lines(frame: pd.DataFrame, reasons: pd.Series) -> pd.Series:
    """A malformed line's reason is that it is malformed (its empty fields would name every rule)."""
    if MALFORMED_LINE not in frame.columns:
        return reasons
    return reasons.mask(frame[MALFORMED_LINE].notna().to_numpy(), MALFORMED_LINE)


def _check_columns(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """Refuse a file lacking a required column; an empty file has nothing to lack."""
    missing = missing_columns(frame)
    if missing and len(frame):
        raise IngestError(
            f"{source.name}: missing required column(s) {', '.join(missing)} (required: {', '.join(REQUIRED_COLUMNS)})"
        )
    for column in missing:
        frame[column] = pd.Series(dtype=TEXT, index=frame.index)
    return frame


_CATALOGS_IN_CONTRACT: set[tuple[str, str]] = set()  # (contract root, catalog digest) validated in this process


def _check_catalog_contract(catalog: pd.DataFrame, source: Path, day: str, contract_root: Path) -> None:
    """A broken catalog (duplicate ids, zero durations) would make unknown_track and absurd_duration lie.

    A catalog is validated once per content and contract root in a process: a run ingesting many days of one
    catalog checks it once (the result cannot differ), and a changed catalog is checked again.
    """
    from validation.raw_suites import catalog_suite, validate_contract

    key = (str(contract_root), frame_digest(catalog))
    if key in _CATALOGS_IN_CONTRACT:
        return
    result = validate_contract(catalog, catalog_suite(), contract_root, f"{day}-{safe_stem(source)}-catalog")
    if not result.success:
        raise IngestError(f"{source.name}: the catalog breaks its contract: {_listed(result)}")
    _CATALOGS_IN_CONTRACT.add(key)


def _events_contract_problem(
    accepted: pd.DataFrame, report: IngestReport, durations: pd.Series, as_of: pd.Timestamp | None, root: Path
) -> str | None:
    """Belt and braces: rows the pandas rules accepted must satisfy the declared GE contract too."""
    from validation.raw_suites import contract_frame, events_suite, validate_contract

    suite = events_suite(report.day, durations.index.to_numpy(), durations, as_of=as_of)
    result = validate_contract(contract_frame(accepted, durations), suite, root,
                               f"{report.day}-{safe_stem(report.source)}")
    if result.success:
        return None
    return (f"{Path(report.source).name}: accepted rows break the raw_events contract, so the ingest rules and "
            f"the contract disagree: {_listed(result)}")


def _listed(result) -> str:
    return "; ".join(str(f) for f in result.failures) + f". Data Docs: {result.docs}"


def _reason_stats(reasons: pd.Series) -> dict[str, tuple[int, int]]:
    """Rule name -> (rows failing it, first source row), most common first (ties: earliest first)."""
    if reasons.empty:
        return {}
    names = reasons.str.split(";").explode()
    rows = pd.Series(names.index, index=names.index)
    table = rows.groupby(names.to_numpy()).agg(["size", "min"]).sort_values(["size", "min"], ascending=[False, True])
    return {str(name): (int(count), int(first)) for name, count, first in table.itertuples()}


def _threshold_message(report: IngestReport, share: float, limit: float, stats: dict[str, tuple[int, int]]) -> str:
    top = "; ".join(
        f"{name} ×{count} (first at row {first})" for name, (count, first) in list(stats.items())[:TOP_REASONS]
    )
    return (
        f"{Path(report.source).name}: {report.quarantined} of {report.rows_read} rows ({_percent(share)}) "
        f"quarantined, above the {_percent(limit)} threshold. Most common: {top}. "
        f"Quarantine: {report.quarantine_path}"
    )


def _percent(share: float) -> str:
    """One decimal, more only when one would round a non-zero share to 0.0%."""
    decimals = 1
    while decimals < 4 and share and round(share * 100, decimals) == 0:
        decimals += 1
    return f"{share:.{decimals}%}"
