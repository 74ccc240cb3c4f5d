"""Ingest and row validation against known answers: each kind of bad row at a known source row."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import schema as s
from pipeline.core.paths import Layout
from pipeline.data.events import read_exploration_events, read_raw_events
from pipeline.data.ingest import MALFORMED_LINE, IngestError, IngestReport, ingest_file, read_events_file
from validation.events import RULE_NAMES, RULES, validate_events

DAY = "2026-11-01"
N_ROWS = 200
SHORT_TRACK = 7  # catalog duration 100_000 ms; all others 200_000
FORMATS = ("csv", "jsonl", "parquet")
Row = dict[str, object]


# --- fixtures and writers -----------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(home=tmp_path / "home")


@pytest.fixture
def catalog() -> pd.DataFrame:
    ids = np.arange(1, 51)
    return pd.DataFrame({s.TRACK_ID: ids, s.DURATION_MS: np.where(ids == SHORT_TRACK, 100_000, 200_000)})


def iso(minutes: float, day: str = DAY) -> str:
    return (pd.Timestamp(day, tz="UTC") + pd.Timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def good_rows(n: int = N_ROWS) -> list[Row]:
    """Valid events, unique (user, track, ts); even rows organic, odd rows exploit/explore."""
    rows = []
    for i in range(n):
        organic = i % 2 == 0
        user = i % 20 + 1
        rows.append(
            {
                s.USER_ID: user,
                s.TRACK_ID: i % 50 + 1,
                s.TS: iso(5 * i),
                s.MS_PLAYED: 1_000 + 100 * i,
                s.SKIPPED: i % 3 == 0,
                s.MIX_ID: None if organic else s.mix_id(DAY, user, i % 6),
                s.POSITION: None if organic else i % 30,
                s.POLICY: s.POLICY_ORGANIC if organic else (s.POLICY_EXPLOIT if i % 4 == 1 else s.POLICY_EXPLORE),
                s.PROPENSITY: None if organic else 0.25,
            }
        )
    return rows


def write_events(rows: list[Row], path: Path) -> Path:
    """Write rows as the producer would: CSV text, native JSON values, Parquet of strings."""
    columns = list(dict.fromkeys(k for row in rows for k in row)) or list(s.EVENT_COLUMNS)
    if path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in rows])
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        frame = pd.DataFrame({c: [None if r.get(c) is None else str(r[c]) for r in rows] for c in columns})
        frame.to_parquet(path, index=False)
    return path


def events_file(tmp_path: Path, fmt: str, rows: list[Row], name: str = "events") -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    return write_events(rows, tmp_path / "in" / f"{name}.{fmt}")


def quarantine_of(report: IngestReport) -> dict[int, str]:
    if report.quarantine_path is None:
        return {}
    q = pd.read_parquet(report.quarantine_path)
    return dict(zip(q[s.SOURCE_ROW].tolist(), q[s.QUARANTINE_REASON].tolist(), strict=True))


def assert_consistent(report: IngestReport, expected: dict[int, str]) -> None:
    """Exact reasons at exact rows, counts that add up, raw = the good rows."""
    assert quarantine_of(report) == expected
    assert report.quarantined == len(expected)
    assert report.accepted + report.quarantined == report.rows_read
    assert report.reasons == dict(Counter(r for reasons in expected.values() for r in reasons.split(";")))
    assert report.raw_path is not None
    raw = pd.read_parquet(report.raw_path)
    assert len(raw) == report.accepted
    assert raw.dtypes.astype(str).to_dict() == s.EVENT_DTYPES
    assert list(raw.columns) == list(s.EVENT_COLUMNS)


# --- each kind of bad row -----------------------------------------------------------------------


def put(**changes: dict[int, object]) -> Callable[[list[Row]], None]:
    """Mutator setting column values at 1-based source rows: put(user_id={5: None})."""

    def mutate(rows: list[Row]) -> None:
        for column, at in changes.items():
            for row_number, value in at.items():
                rows[row_number - 1][column] = value

    return mutate


def copy_key(src: int, dst: int, **overrides: object) -> Callable[[list[Row]], None]:
    def mutate(rows: list[Row]) -> None:
        rows[dst - 1] = {**rows[src - 1], **overrides}

    return mutate


def epoch_ms(iso_ts: str) -> int:
    return int(pd.Timestamp(iso_ts).value // 1_000_000)


CASES: dict[str, tuple[Callable[[list[Row]], None], dict[int, str]]] = {
    "missing_user_id": (put(user_id={5: None}), {5: "missing_user_id"}),
    "missing_track_id": (put(track_id={10: ""}), {10: "missing_track_id"}),
    "missing_ts": (put(ts={12: None}), {12: "missing_ts"}),
    "missing_ms_played": (put(ms_played={13: "  "}), {13: "missing_ms_played"}),
    "missing_skipped": (put(skipped={14: None}), {14: "missing_skipped"}),
    "bad_type_ids": (
        put(user_id={3: "abc"}, track_id={7: "1.5"}),
        {3: "bad_type:user_id", 7: "bad_type:track_id"},
    ),
    "bad_type_ts": (put(ts={20: "yesterday", 21: "2026-13-01T00:00:00Z"}), {20: "bad_type:ts", 21: "bad_type:ts"}),
    "bad_type_ms_played": (put(ms_played={22: "12x", 23: "1.5"}), {22: "bad_type:ms_played", 23: "bad_type:ms_played"}),
    "bad_type_skipped": (put(skipped={24: "maybe", 25: "2"}), {24: "bad_type:skipped", 25: "bad_type:skipped"}),
    "bad_type_position": (put(position={26: -1, 28: "first"}), {26: "bad_type:position", 28: "bad_type:position"}),
    "bad_type_propensity": (put(propensity={30: "high"}), {30: "bad_type:propensity"}),
    "unknown_track": (put(track_id={12: 9999, 40: 0}), {12: "unknown_track", 40: "unknown_track"}),
    "negative_duration": (put(ms_played={15: -5}), {15: "negative_duration"}),
    "absurd_duration": (
        # row 57 plays track 7 (100_000 ms): 150_000 is the last plausible value
        put(ms_played={7: 150_001, 57: 150_000, 8: 3_600_001}),
        {7: "absurd_duration", 8: "absurd_duration"},
    ),
    "future_timestamp": (put(ts={16: iso(23 * 60 + 30)}), {16: "future_timestamp"}),
    "outside_day": (
        # the day is [00:00, next 00:00); as_of is 23:00, so next-day 00:00 is also in the future
        put(ts={17: iso(24 * 60), 18: iso(-1 / 60), 19: iso(0)}),
        {17: "future_timestamp;outside_day", 18: "outside_day"},
    ),
    "bad_policy": (put(policy={31: "random", 33: "Exploit"}), {31: "bad_policy", 33: "bad_policy"}),
    "bad_propensity": (
        # row 34 (odd i) is exploit/explore; 1.0 is inside (0, 1]; organic row 35 may give one but it is checked
        put(propensity={34: 0, 36: 1.5, 38: None, 42: 1.0, 35: -0.1}),
        {34: "bad_propensity", 36: "bad_propensity", 38: "bad_propensity", 35: "bad_propensity"},
    ),
    "missing_mix_id": (put(mix_id={44: None, 46: ""}), {44: "missing_mix_id", 46: "missing_mix_id"}),
    "duplicate": (copy_key(11, 41), {41: "duplicate"}),
    "duplicate_other_ts_format": (copy_key(11, 43, ts=epoch_ms(iso(50))), {43: "duplicate"}),
    "several_reasons": (
        put(user_id={50: None}, ts={50: "garbage"}, track_id={50: 9999}),
        {50: "missing_user_id;bad_type:ts;unknown_track"},
    ),
    "bad_first_copy_does_not_shadow_good_later_one": (
        lambda rows: (copy_key(60, 5)(rows), put(ms_played={5: "x"})(rows)),
        {5: "bad_type:ms_played"},
    ),
    "bad_later_copy_is_also_duplicate": (copy_key(11, 70, ms_played=-1), {70: "negative_duration;duplicate"}),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(CASES))
def test_each_kind_of_bad_row(tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str, case: str) -> None:
    mutate, expected = CASES[case]
    rows = good_rows()
    mutate(rows)
    path = events_file(tmp_path, fmt, rows)
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=0.5, as_of=pd.Timestamp(iso(23 * 60)))
    assert report.rows_read == N_ROWS
    assert_consistent(report, expected)


def test_rules_are_named_once_and_cover_every_reason() -> None:
    assert len(set(RULE_NAMES)) == len(RULES)
    assert all(rule.description for rule in RULES)
    reasons = {r for _, expected in CASES.values() for v in expected.values() for r in v.split(";")}
    assert reasons <= set(RULE_NAMES)


# --- good files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_good_file_is_stored_with_schema_dtypes(
    tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str
) -> None:
    rows = good_rows()
    report = ingest_file(events_file(tmp_path, fmt, rows), DAY, layout, catalog)
    assert (report.rows_read, report.accepted, report.quarantined, report.reasons) == (N_ROWS, N_ROWS, 0, {})
    assert report.raw_path.parent == layout.raw_events(DAY) and report.raw_path.name.startswith("events-")
    assert report.quarantine_path is None
    raw = pd.read_parquet(report.raw_path)
    assert raw.dtypes.astype(str).to_dict() == s.EVENT_DTYPES
    assert raw[s.USER_ID].tolist() == [r[s.USER_ID] for r in rows]
    assert raw[s.TS].tolist() == [pd.Timestamp(r[s.TS]) for r in rows]
    assert raw[s.SKIPPED].tolist() == [r[s.SKIPPED] for r in rows]
    assert raw[s.POLICY].tolist() == [r[s.POLICY] for r in rows]
    assert raw[s.MIX_ID].isna().tolist() == [r[s.MIX_ID] is None for r in rows]
    assert raw[s.POSITION].isna().sum() == N_ROWS // 2
    np.testing.assert_array_equal(raw[s.PROPENSITY].to_numpy(), [np.nan if i % 2 == 0 else 0.25 for i in range(N_ROWS)])


def test_typed_parquet_with_nan_floats_is_accepted(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    """A pandas-written landing file: native dtypes, NaN for missing propensity."""
    frame = pd.DataFrame(good_rows())
    frame[s.TS] = pd.to_datetime(frame[s.TS], utc=True)
    frame = frame.astype(s.EVENT_DTYPES)
    path = tmp_path / "events.parquet"
    frame.to_parquet(path, index=False)
    report = ingest_file(path, DAY, layout, catalog)
    assert (report.accepted, report.quarantined) == (N_ROWS, 0)
    pd.testing.assert_frame_equal(pd.read_parquet(report.raw_path), frame)


@pytest.mark.parametrize("fmt", FORMATS)
def test_value_spellings(tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str) -> None:
    """Integral floats, epoch ms, offsets, naive UTC and boolean spellings all parse to the same event."""
    base = pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(hours=10)
    spellings = [
        (12, base.strftime("%Y-%m-%dT%H:%M:%SZ"), True),
        ("13.0", str(epoch_ms(str(base))), "TRUE"),
        (14.0, "2026-11-01T12:00:00+02:00", "1"),
        ("15", "2026-11-01 10:00:00", "false"),
        (" 16 ", "2026-11-01T10:00:00.000", "0"),
        ("17", "2026-11-01T10:00:00.000000000Z", "False"),
        ("18", "2026-11-01T05:00-0500", "true"),
        ("19", "2026-11-01T10:00", "false"),  # naive after aware values still means UTC
    ]
    rows = [{s.USER_ID: u, s.TRACK_ID: "3.", s.TS: ts, s.MS_PLAYED: "1000.0", s.SKIPPED: sk} for u, ts, sk in spellings]
    report = ingest_file(events_file(tmp_path, fmt, rows), DAY, layout, catalog)
    assert (report.accepted, report.quarantined) == (len(rows), 0)
    raw = pd.read_parquet(report.raw_path)
    assert raw[s.USER_ID].tolist() == list(range(12, 20))
    assert (raw[s.TS] == base).all()
    assert raw[s.SKIPPED].tolist() == [True, True, True, False, False, False, True, False]


def test_optional_columns_get_defaults(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    required = (s.USER_ID, s.TRACK_ID, s.TS, s.MS_PLAYED, s.SKIPPED)
    rows = [{k: v for k, v in r.items() if k in required} for r in good_rows(10)]
    report = ingest_file(events_file(tmp_path, "csv", rows), DAY, layout, catalog)
    raw = pd.read_parquet(report.raw_path)
    assert raw[s.MIX_ID].isna().all() and raw[s.POSITION].isna().all() and raw[s.PROPENSITY].isna().all()
    assert (raw[s.POLICY] == s.POLICY_ORGANIC).all()
    assert raw.dtypes.astype(str).to_dict() == s.EVENT_DTYPES


# --- quarantine content -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_quarantine_keeps_original_values(tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str) -> None:
    rows = [{**r, "client": "ios"} for r in good_rows(20)]
    for r in rows:
        del r[s.POSITION]
    rows[2][s.USER_ID] = "abc"
    rows[2][s.TS] = "  yesterday"
    path = events_file(tmp_path, fmt, rows)
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=1.0)
    q = pd.read_parquet(report.quarantine_path)
    assert report.quarantine_path == layout.quarantine(DAY) / report.raw_path.name
    assert s.POSITION not in q.columns
    assert list(q.columns[-3:]) == [s.QUARANTINE_REASON, s.SOURCE_FILE, s.SOURCE_ROW]
    row = q.iloc[0]
    assert (row[s.USER_ID], row[s.TS], row["client"]) == ("abc", "  yesterday", "ios")
    assert row[s.QUARANTINE_REASON] == "bad_type:user_id;bad_type:ts"
    assert row[s.SOURCE_FILE] == str(path)
    assert row[s.SOURCE_ROW] == 3
    assert all(isinstance(v, str) for v in row[[s.USER_ID, s.TRACK_ID, s.MS_PLAYED, s.SKIPPED]])


# --- threshold ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_above_threshold_refuses_the_file_and_keeps_what_was_stored(
    tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str
) -> None:
    good = ingest_file(events_file(tmp_path, fmt, good_rows()), DAY, layout, catalog)
    assert good.raw_path is not None and good.raw_path.exists()
    rows = good_rows()
    put(track_id={12: 9999, 90: 9998}, ts={3: "nope"})(rows)  # 3 of 200 = 1.5%
    path = events_file(tmp_path, fmt, rows)
    before = path.read_bytes()
    with pytest.raises(IngestError) as err:
        ingest_file(path, DAY, layout, catalog)
    message = str(err.value)
    assert message.startswith(f"events.{fmt}: 3 of 200 rows (1.5%) quarantined, above the 1.0% threshold.")
    assert "Most common: unknown_track ×2 (first at row 12); bad_type:ts ×1 (first at row 3)." in message
    assert str(err.value.report.quarantine_path) in message
    assert good.raw_path.exists() and len(read_raw_events(layout, [DAY])) == 200  # refused: nothing stored is touched
    assert quarantine_of(err.value.report) == {3: "bad_type:ts", 12: "unknown_track", 90: "unknown_track"}
    assert err.value.report.raw_path is None
    assert err.value.report.accepted + err.value.report.quarantined == err.value.report.rows_read
    assert path.read_bytes() == before


def test_exploration_events_are_kept_in_their_own_partition(
    tmp_path: Path, layout: Layout, catalog: pd.DataFrame
) -> None:
    rows = good_rows()
    ingest_file(events_file(tmp_path, "csv", rows), DAY, layout, catalog)
    explore = read_exploration_events(layout, [DAY])
    expected = [r for r in rows if r[s.POLICY] == s.POLICY_EXPLORE]
    assert len(expected) == N_ROWS // 4 and len(list(layout.exploration(DAY).iterdir())) == 1
    assert explore.dtypes.astype(str).to_dict() == s.EVENT_DTYPES
    assert sorted(zip(explore[s.USER_ID], explore[s.TRACK_ID], strict=True)) == sorted(
        (r[s.USER_ID], r[s.TRACK_ID]) for r in expected)
    assert (explore[s.POLICY] == s.POLICY_EXPLORE).all() and (explore[s.PROPENSITY] == 0.25).all()
    raw = read_raw_events(layout, [DAY])
    assert len(raw) == N_ROWS  # the raw log keeps every row; the partition is a copy of its explore rows

    # Re-ingesting the file without exploration rows leaves no stale partition; a refused batch touches nothing.
    ingest_file(events_file(tmp_path, "csv", [r for r in rows if r[s.POLICY] != s.POLICY_EXPLORE]), DAY, layout,
                catalog)
    assert read_exploration_events(layout, [DAY]).empty
    ingest_file(events_file(tmp_path, "csv", rows), DAY, layout, catalog)
    broken = good_rows()
    put(track_id={12: 9999, 90: 9998, 91: 9997})(broken)
    with pytest.raises(IngestError):
        ingest_file(events_file(tmp_path, "csv", broken), DAY, layout, catalog)
    assert len(read_exploration_events(layout, [DAY])) == len(expected)


def test_exactly_at_threshold_is_accepted(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    rows = good_rows()
    put(track_id={12: 9999, 90: 9998})(rows)  # 2 of 200 = 1.0%, not above
    report = ingest_file(events_file(tmp_path, "csv", rows), DAY, layout, catalog)
    assert_consistent(report, {12: "unknown_track", 90: "unknown_track"})
    assert report.summary() == "events.csv 2026-11-01: 200 read, 198 accepted, 2 quarantined (unknown_track 2)"


def test_threshold_is_configurable(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    rows = good_rows()
    put(track_id={12: 9999})(rows)
    with pytest.raises(IngestError, match=r"1 of 200 rows \(0.5%\) quarantined, above the 0.0% threshold"):
        ingest_file(events_file(tmp_path, "csv", rows), DAY, layout, catalog, max_bad_row_share=0.0)


# --- idempotence and the day's other parts ------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_reingest_is_idempotent(tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str) -> None:
    rows = good_rows()
    put(track_id={12: 9999})(rows)
    path = events_file(tmp_path, fmt, rows)
    first = ingest_file(path, DAY, layout, catalog)
    raw_bytes, q_bytes = first.raw_path.read_bytes(), first.quarantine_path.read_bytes()
    second = ingest_file(path, DAY, layout, catalog)
    assert second == first
    assert second.raw_path.read_bytes() == raw_bytes
    assert second.quarantine_path.read_bytes() == q_bytes
    assert sorted(p.name for p in layout.raw_events(DAY).iterdir()) == [first.raw_path.name]


def test_fixed_file_clears_stale_quarantine(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    rows = good_rows()
    put(track_id={12: 9999})(rows)
    first = ingest_file(events_file(tmp_path, "csv", rows), DAY, layout, catalog)
    assert first.quarantine_path is not None
    second = ingest_file(events_file(tmp_path, "csv", good_rows()), DAY, layout, catalog)
    assert second.quarantine_path is None and not first.quarantine_path.exists()
    assert sorted(p.name for p in layout.raw_events(DAY).iterdir()) == [second.raw_path.name]  # replaced, once stored
    assert len(read_raw_events(layout, [DAY])) == N_ROWS


def test_rows_already_stored_from_another_file_are_duplicates(
    tmp_path: Path, layout: Layout, catalog: pd.DataFrame
) -> None:
    ingest_file(events_file(tmp_path, "csv", good_rows()), DAY, layout, catalog)
    late = [
        {**good_rows()[9], s.TS: epoch_ms(iso(45))},  # row 10 of events.csv again, ts spelled differently
        {**good_rows()[9], s.TS: iso(46)},  # new ts: a new event
    ]
    report = ingest_file(events_file(tmp_path, "jsonl", late, name="late"), DAY, layout, catalog, max_bad_row_share=1)
    assert_consistent(report, {1: "duplicate"})
    events = read_raw_events(layout, [DAY])
    assert len(events) == N_ROWS + 1
    assert not events.duplicated([s.USER_ID, s.TRACK_ID, s.TS]).any()


def test_a_file_of_the_same_name_from_elsewhere_never_touches_stored_events(
    tmp_path: Path, layout: Layout, catalog: pd.DataFrame
) -> None:
    """Another source with the same file name (`other/events.csv`) stores beside the first, whatever it holds:
    header only, refused for a missing column, refused for bad rows, or new events; the same file again adds none."""
    landed = events_file(tmp_path, "csv", good_rows())
    first = ingest_file(landed, DAY, layout, catalog)
    other = tmp_path / "other"
    other.mkdir()

    def stored() -> tuple[int, int]:
        return len(read_raw_events(layout, [DAY])), len(read_exploration_events(layout, [DAY]))

    assert ingest_file(write_events([], other / "events.csv"), DAY, layout, catalog).rows_read == 0
    assert stored() == (N_ROWS, N_ROWS // 4)
    no_skipped = [{k: v for k, v in row.items() if k != s.SKIPPED} for row in good_rows(10)]
    with pytest.raises(IngestError, match="missing required column"):
        ingest_file(write_events(no_skipped, other / "events.csv"), DAY, layout, catalog)
    assert stored() == (N_ROWS, N_ROWS // 4)
    unknown_tracks = [{**row, s.TRACK_ID: 9999} for row in good_rows(10)]
    with pytest.raises(IngestError, match=r"above the 1\.0% threshold"):
        ingest_file(write_events(unknown_tracks, other / "events.csv"), DAY, layout, catalog)
    assert stored() == (N_ROWS, N_ROWS // 4)
    newcomers = [{**row, s.USER_ID: 100 + i} for i, row in enumerate(good_rows(10))]
    assert ingest_file(write_events(newcomers, other / "events.csv"), DAY, layout, catalog).accepted == 10
    assert ingest_file(landed, DAY, layout, catalog) == first  # the same file again: the same part, rewritten
    events = read_raw_events(layout, [DAY])
    assert len(events) == N_ROWS + 10 and not events.duplicated([s.USER_ID, s.TRACK_ID, s.TS]).any()
    assert first.raw_path.exists() and len(list(layout.raw_events(DAY).iterdir())) == 2


SAFE_PART_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{16}-[0-9a-f]{16}\.parquet"


@pytest.mark.parametrize("stem", ["e" * 240, "day\nsix", "tab\tand\x1b[31mescape", ".hidden", "plays été"])
def test_any_file_name_gives_a_short_safe_part_name_and_reingesting_it_keeps_one_part(
    tmp_path: Path, layout: Layout, catalog: pd.DataFrame, stem: str
) -> None:
    """A stem too long for a part name (255 bytes), or holding a control character, a space or non-ASCII, is stored
    under a name of [A-Za-z0-9._-] only (not hidden), under 255 bytes; the quarantine part is named alike."""
    rows = good_rows()
    put(track_id={12: 9999})(rows)
    path = events_file(tmp_path, "csv", rows, name=stem)
    first = ingest_file(path, DAY, layout, catalog)
    assert first.accepted == N_ROWS - 1 and first.quarantined == 1
    for part in (first.raw_path, first.quarantine_path):
        assert re.fullmatch(SAFE_PART_NAME, part.name) and len(part.name.encode()) < 200, part.name
    assert ingest_file(path, DAY, layout, catalog) == first
    assert [p.name for p in layout.raw_events(DAY).iterdir()] == [first.raw_path.name]
    assert len(read_raw_events(layout, [DAY])) == N_ROWS - 1


def test_a_part_stored_under_an_earlier_stem_of_the_same_file_is_replaced_not_doubled(
    tmp_path: Path, layout: Layout, catalog: pd.DataFrame
) -> None:
    """A file's parts are told by its path digest, not its stem: a part stored under another stem (as names were
    made before stems were made safe) is the same source's, replaced on re-ingest, its rows no duplicates."""
    path = events_file(tmp_path, "csv", good_rows())
    first = ingest_file(path, DAY, layout, catalog)
    earlier = first.raw_path.with_name("earlier stem" + first.raw_path.name.removeprefix("events"))
    first.raw_path.rename(earlier)
    again = ingest_file(path, DAY, layout, catalog)
    assert again.accepted == N_ROWS and again.quarantined == 0
    assert [p.name for p in layout.raw_events(DAY).iterdir()] == [first.raw_path.name]
    assert len(read_raw_events(layout, [DAY])) == N_ROWS


# --- file-level problems ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_column(tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str) -> None:
    """A file-level error: the file is refused and what was stored before, from this source too, is kept."""
    previous = ingest_file(events_file(tmp_path, fmt, good_rows(10)), DAY, layout, catalog)
    rows = [{k: v for k, v in r.items() if k != s.SKIPPED} for r in good_rows(10)]
    with pytest.raises(IngestError, match=rf"events\.{fmt}: missing required column\(s\) skipped"):
        ingest_file(events_file(tmp_path, fmt, rows), DAY, layout, catalog)
    assert previous.raw_path is not None and previous.raw_path.exists()
    assert len(read_raw_events(layout, [DAY])) == 10


@pytest.mark.parametrize("content", ["header", "zero_bytes"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_file_is_accepted(tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str, content: str) -> None:
    path = tmp_path / f"events.{fmt}"
    if content == "zero_bytes" and fmt != "parquet":
        path.write_bytes(b"")
    elif fmt == "csv":
        path.write_text(",".join(s.EVENT_COLUMNS) + "\n")
    elif fmt == "jsonl":
        path.write_text("\n")
    else:
        pd.DataFrame({c: pd.Series(dtype="string") for c in s.EVENT_COLUMNS}).to_parquet(path)
    report = ingest_file(path, DAY, layout, catalog)
    assert (report.rows_read, report.accepted, report.quarantined, report.reasons) == (0, 0, 0, {})
    raw = pd.read_parquet(report.raw_path)
    assert raw.empty and raw.dtypes.astype(str).to_dict() == s.EVENT_DTYPES
    assert report.summary() == f"events.{fmt} {DAY}: 0 read, 0 accepted, 0 quarantined"


def test_unsupported_extension(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    path = tmp_path / "events.xlsx"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"events\.xlsx"):
        ingest_file(path, DAY, layout, catalog)


def test_a_malformed_jsonl_line_is_quarantined_with_its_text_and_the_others_are_judged(
        tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    """One bad line never costs the file its good rows, and what it sent is kept."""
    good = good_rows(3)
    lines = [json.dumps(good[0]), "", "{not json}", json.dumps(good[1]), "[" * 100_000 + "]" * 100_000, "[1, 2]",
             json.dumps(good[2])]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=1)
    assert (report.accepted, report.quarantined) == (3, 3)
    assert len(pd.read_parquet(report.raw_path)) == 3
    quarantined = pd.read_parquet(report.quarantine_path)
    assert list(quarantined[s.SOURCE_ROW]) == [3, 5, 6]
    assert set(quarantined[s.QUARANTINE_REASON]) == {MALFORMED_LINE}
    why = list(quarantined[MALFORMED_LINE])
    assert why[0] == "not valid JSON (Expecting property name enclosed in double quotes): {not json}"
    assert why[1].startswith("nested too deeply to be an event: [[[") and len(why[1]) < 2_100
    assert why[2] == "not a JSON object: [1, 2]"


def test_a_csv_record_wider_than_its_header_is_quarantined_and_the_others_are_judged(
        tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    good = pd.DataFrame(good_rows(3))
    path = events_file(tmp_path, "csv", good_rows(3))
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, rows[0], rows[1] + ",extra", "", rows[2]]) + "\n")
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=1)
    assert (report.accepted, report.quarantined) == (len(good) - 1, 1)
    quarantined = pd.read_parquet(report.quarantine_path)
    assert list(quarantined[s.SOURCE_ROW]) == [2] and list(quarantined[s.QUARANTINE_REASON]) == [MALFORMED_LINE]
    assert quarantined[MALFORMED_LINE].iloc[0].startswith(f"{len(header.split(',')) + 1} fields where the header has")
    assert quarantined[MALFORMED_LINE].iloc[0].endswith(",extra")


def test_malformed_lines_count_against_the_bad_row_share(tmp_path: Path, layout: Layout, catalog: pd.DataFrame
                                                         ) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(good_rows(1)[0]) + "\n\n{not json}\n")
    with pytest.raises(IngestError, match=r"events\.jsonl: .*malformed_line") as refused:
        ingest_file(path, DAY, layout, catalog)
    assert refused.value.report.raw_path is None


def test_a_jsonl_file_without_one_readable_line_is_refused_naming_the_first(
        tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n{not json}\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(IngestError, match=r"events\.jsonl: line 2 is not valid JSON"):
        ingest_file(path, DAY, layout, catalog)


def test_a_missing_file_or_a_directory_is_refused_by_name(tmp_path: Path, layout: Layout, catalog: pd.DataFrame
                                                          ) -> None:
    with pytest.raises(IngestError, match=r"nowhere\.csv: no such file"):
        ingest_file(tmp_path / "nowhere.csv", DAY, layout, catalog)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(IngestError, match=r"folder\.csv: not a regular file"):
        ingest_file(tmp_path / "folder.csv", DAY, layout, catalog)


@pytest.mark.parametrize("share", [float("nan"), -0.1, 1.5])
def test_a_threshold_outside_zero_to_one_is_refused(tmp_path: Path, layout: Layout, catalog: pd.DataFrame,
                                                   share: float) -> None:
    """NaN would let a fully bad file pass: no share is above NaN."""
    bad = [{**row, s.TRACK_ID: 9999} for row in good_rows(5)]
    with pytest.raises(ValueError, match="bad-row share"):
        ingest_file(events_file(tmp_path, "csv", bad), DAY, layout, catalog, max_bad_row_share=share)
    assert not layout.raw_events(DAY).exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_free_text_is_quarantined_as_sent_and_the_rest_is_kept(tmp_path: Path, layout: Layout,
                                                                       catalog: pd.DataFrame, fmt: str) -> None:
    """Every text field has a form and a length: a mix id naming a path or a megabyte long, a negative user id and
    a lone surrogate are quarantined with their rule; the other rows of the file are stored."""
    rows = good_rows(10)
    rows[1][s.MIX_ID] = f"{DAY}/../../../../tmp/x:1:0"
    rows[3][s.MIX_ID] = f"{DAY}:{'9' * 1_000_000}:0"
    rows[4][s.USER_ID] = -3
    rows[5][s.MIX_ID] = "\ud800"
    rows[7][s.POLICY] = "explore" + "\udfff"
    if fmt != "jsonl":  # only JSON escapes can carry a lone surrogate (CSV bytes: the non-UTF-8 test below)
        rows[5][s.MIX_ID], rows[7][s.POLICY] = "m", "random"
    report = ingest_file(events_file(tmp_path, fmt, rows), DAY, layout, catalog, max_bad_row_share=1.0)
    assert_consistent(report, {2: "bad_type:mix_id", 4: "bad_type:mix_id", 5: "bad_type:user_id",
                               6: "bad_type:mix_id", 8: "bad_policy"})
    quarantined = pd.read_parquet(report.quarantine_path).set_index(s.SOURCE_ROW)
    assert len(quarantined.loc[4, s.MIX_ID]) == len(rows[3][s.MIX_ID])  # as sent, nothing cut
    if fmt == "jsonl":
        assert quarantined.loc[6, s.MIX_ID] == "\\ud800"


def test_bytes_that_are_not_utf8_quarantine_their_row_only(tmp_path: Path, layout: Layout, catalog: pd.DataFrame
                                                          ) -> None:
    path = events_file(tmp_path, "csv", good_rows(4))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"exploit", b"expl\xffoit")  # data row 2 is the first exploit row
    path.write_bytes(b"".join(lines))
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=1.0)
    assert_consistent(report, {2: "bad_policy"})
    assert pd.read_parquet(report.quarantine_path)[s.POLICY].tolist() == ["expl\\xffoit"]



def utf8_unchecked(values: list[str | None], invalid: dict[int, bytes]) -> pa.Array:
    """A Parquet string column as a writer that does not check UTF-8 leaves it: `invalid` replaces values' bytes."""
    raw = [None if v is None else invalid.get(i, v.encode()) for i, v in enumerate(values)]
    offsets = np.cumsum([0] + [len(b or b"") for b in raw]).astype(np.int32)
    validity = pa.array([b is not None for b in raw]).buffers()[1]
    return pa.Array.from_buffers(pa.string(), len(raw), [validity, pa.py_buffer(offsets.tobytes()),
                                                          pa.py_buffer(b"".join(b or b"" for b in raw))])


@pytest.mark.parametrize("kind", ["string", "binary"])
def test_parquet_bytes_that_are_not_utf8_quarantine_their_row_only(tmp_path: Path, layout: Layout,
                                                                   catalog: pd.DataFrame, kind: str) -> None:
    """A string column holding bytes that are not UTF-8 (or a binary column) reads as text with backslash escapes."""
    rows = good_rows(4)
    table = pq.read_table(events_file(tmp_path, "parquet", rows))
    policies = [str(r[s.POLICY]) for r in rows]
    column = utf8_unchecked(policies, {1: b"expl\xffoit"})
    if kind == "binary":
        column = pa.array([p.encode() for p in policies[:1]] + [b"expl\xffoit"] + [p.encode() for p in policies[2:]],
                          pa.binary())
    path = tmp_path / "unchecked.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index(s.POLICY), s.POLICY, column), path)
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=1.0)
    assert_consistent(report, {2: "bad_policy"})
    assert pd.read_parquet(report.quarantine_path)[s.POLICY].tolist() == ["expl\\xffoit"]
    assert pd.read_parquet(report.raw_path)[s.POLICY].tolist() == [policies[0], *policies[2:]]

def test_malformed_day_is_refused(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="2026-11-1"):
        ingest_file(events_file(tmp_path, "csv", good_rows(3)), "2026-11-1", layout, catalog)


def test_jsonl_source_rows_are_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"user_id": 1}\n\n{"user_id": "x", "extra": null}\n')
    frame = read_events_file(path)
    assert frame.index.tolist() == [1, 3]
    assert frame[s.USER_ID].tolist() == ["1", "x"]
    assert frame["extra"].isna().all()


# --- reading the raw store ----------------------------------------------------------------------


def test_read_raw_events_concatenates_and_sorts(tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    rows = good_rows(20)
    ingest_file(events_file(tmp_path, "csv", rows[10:], name="b"), DAY, layout, catalog)
    ingest_file(events_file(tmp_path, "csv", rows[:10], name="a"), DAY, layout, catalog)
    events = read_raw_events(layout, [DAY, "2026-11-02"])
    assert events.dtypes.astype(str).to_dict() == s.EVENT_DTYPES
    assert events[s.TS].tolist() == [pd.Timestamp(r[s.TS]) for r in rows]
    assert events.index.tolist() == list(range(20))
    empty = read_raw_events(layout, ["2026-10-01"])
    assert empty.empty and empty.dtypes.astype(str).to_dict() == s.EVENT_DTYPES


# --- validate_events directly -------------------------------------------------------------------


def test_hour_cap_applies_without_known_duration() -> None:
    frame = pd.DataFrame(
        {
            s.USER_ID: ["1", "1"],
            s.TRACK_ID: ["5", "5"],
            s.TS: [iso(1), iso(2)],
            s.MS_PLAYED: ["3600000", "3600001"],
            s.SKIPPED: ["0", "0"],
        },
        index=[101, 102],
    )
    accepted, reasons = validate_events(frame, day=DAY, catalog_track_ids=None)
    assert reasons.to_dict() == {101: "", 102: "absurd_duration"}
    assert accepted.index.tolist() == [101]
    assert list(accepted.columns) == list(s.EVENT_COLUMNS)


@pytest.mark.slow
def test_validate_events_is_vectorised_at_scale(catalog: pd.DataFrame) -> None:
    n = 200_000
    rng = np.random.default_rng(0)
    ts = pd.Timestamp(DAY, tz="UTC") + pd.to_timedelta(np.arange(n) * 400, unit="ms")
    frame = pd.DataFrame(
        {
            s.USER_ID: rng.integers(1, 1000, n).astype(str),
            s.TRACK_ID: rng.integers(1, 60, n).astype(str),  # 51..59 are unknown
            s.TS: ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            s.MS_PLAYED: rng.integers(0, 100_000, n).astype(str),
            s.SKIPPED: np.where(rng.random(n) < 0.3, "true", "false"),
            s.POLICY: s.POLICY_ORGANIC,
        }
    ).astype("string")
    accepted, reasons = validate_events(
        frame,
        day=DAY,
        catalog_track_ids=set(catalog[s.TRACK_ID].tolist()),
        track_durations_ms=catalog.set_index(s.TRACK_ID)[s.DURATION_MS],
    )
    unknown = frame[s.TRACK_ID].astype(int) > 50
    assert (reasons[unknown] == "unknown_track").all()
    assert (reasons[~unknown] == "").all()
    assert len(accepted) + int(unknown.sum()) == n


# --- a column named twice, an integer Python will not read ---------------------------------------


@pytest.mark.parametrize("names", [("user_id", "user_id"), ("user_id", " user_id")], ids=["as_written", "stripped"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_column_named_twice_refuses_the_file_and_touches_nothing(
        tmp_path: Path, layout: Layout, catalog: pd.DataFrame, fmt: str, names: tuple[str, str]) -> None:
    """Which of the two values a row holds is anyone's guess: neither is read silently."""
    path = tmp_path / f"events.{fmt}"
    header = [*names, s.TRACK_ID, s.TS, s.MS_PLAYED, s.SKIPPED]
    values = [["1", "2", "5", iso(1), "1000", "false"]]
    if fmt == "csv":
        path.write_text("\n".join(",".join(r) for r in [header, *values]) + "\n")
    else:
        pq.write_table(pa.table([pa.array([v]) for v in values[0]], names=header), path)
    with pytest.raises(IngestError, match=r"events\.\w+: column 'user_id' appears more than once"):
        ingest_file(path, DAY, layout, catalog, max_bad_row_share=1)
    assert not layout.home.exists() or not any(layout.home.rglob("*.parquet"))


def test_a_jsonl_line_naming_a_key_twice_is_quarantined_and_the_others_are_judged(
        tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    good = good_rows(2)
    body = json.dumps({k: v for k, v in good[0].items() if k != s.USER_ID})[1:]
    lines = ['{"user_id": "x", "user_id": 1, ' + body, '{" user_id": 2, "user_id": 1, ' + body, json.dumps(good[1])]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=1)
    assert (report.accepted, report.quarantined) == (1, 2)
    quarantined = pd.read_parquet(report.quarantine_path)
    assert set(quarantined[s.QUARANTINE_REASON]) == {MALFORMED_LINE}
    assert all(why.startswith("not one event (key 'user_id' given more than once)")
               for why in quarantined[MALFORMED_LINE])


def test_a_jsonl_integer_too_long_to_read_is_one_quarantined_line(
        tmp_path: Path, layout: Layout, catalog: pd.DataFrame) -> None:
    """Python refuses to read an integer of more than 4300 digits (a ValueError, not a JSON error)."""
    good = good_rows(2)
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(good[0]).replace('"user_id": 1', '"user_id": ' + "9" * 5_000) + "\n"
                    + json.dumps(good[1]) + "\n")
    report = ingest_file(path, DAY, layout, catalog, max_bad_row_share=1)
    assert (report.accepted, report.quarantined) == (1, 1)
    assert pd.read_parquet(report.quarantine_path)[MALFORMED_LINE].iloc[0].startswith("not valid JSON (")
