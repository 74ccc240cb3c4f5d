"""The row path of the event rules (`validate_rows`, used by the serving API) agrees with the vectorised one
(`validate_events`, used by ingest): same reasons per row, same accepted values, on random and adversarial rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core import schema as s
from validation.events import MAX_PARSED_CHARS, RULE_NAMES, CatalogLookup, readable_text, validate_events, validate_rows

DAY = "2026-11-01"
AS_OF = pd.Timestamp(f"{DAY}T18:00:00Z")
TRACKS = np.array([1, 2, 3, 5, 8, 13, 13], dtype=np.int64)  # 13 twice: its first duration counts
DURATIONS = pd.Series([200_000.0, np.nan, 1_000.0, 3_000_000.0, 0.0, 10_000.0, 99.0], index=TRACKS)
LOOKUP = CatalogLookup.of(TRACKS, DURATIONS)
EXISTING = pd.DataFrame({s.USER_ID: [7], s.TRACK_ID: [1], s.TS: [pd.Timestamp(f"{DAY}T10:00:00Z")]})
EXISTING_KEYS = {(7, 1, pd.Timestamp(f"{DAY}T10:00:00Z").value)}

# Values chosen to sit on each rule's edges, plus text no rule expects (Unicode digits and spaces, signs, exponents).
INTS = ["7", "1", "13", "+3", "-2", "0", "007", "5.0", "5.", "5.5", "1e3", " 8 ", "\u0663", "x", "",
        "999999999999999999", "9999999999999999999", "-0", "\u00a05\u2003", "5\n", None]
TIMESTAMPS = [f"{DAY}T10:00:00Z", f"{DAY}T10:00:00+00:00", f"{DAY}T10:00:00", f"{DAY} 23:59:59.999999-00:00",
              f"{DAY}T00:00:00Z", "2026-11-02T00:00:00Z", f"{DAY}T19:00:00Z", f"{DAY}T02:00:00+05:30",
              f"{DAY}T22:00:00-0300", "2026-10-31T23:59:59Z", f"{DAY}T10:00:00.5Z", "yesterday", "2026-13-01T00:00:00Z",
              f"{DAY}T10:00:00 Z", f"{DAY}T1\u0660:00:00Z", "1793527200000", "1793527200000.0", "1793527200000.5",
              "9223372036854", "9223372036855", "-9223372036855", "1793527200", f"{DAY}", "20261101T100000Z",
              f"{DAY}T10:00\nZ", "", None]
BOOLS = ["true", "false", "TRUE", "False", "1", "0", "yes", " true ", "t", "", None]
FLOATS = ["0.5", "1", "1.0", "0", "-0.1", "1.0000001", "nan", "inf", "-inf", "1e-3", "1_0", " 0.2 ", "0x1",
          "abc", "", None]
POLICIES = ["organic", "exploit", "explore", "Explore", " explore ", "random", "", None]
MIX_IDS = [f"{DAY}:7:0", f" {DAY}:7:12 ", f"{DAY}:9223372036854775807:999", f"{DAY}:1:1000", f"{DAY}:-1:0",
           "2026-02-29:1:0", "2026-13-01:1:0", f"{DAY}:1", f"{DAY}:1:0:0", f"{DAY}/../../x:1:0", "m",
           "\uff12026-11-01:1:0", f"{DAY}:\u0661:0", f"{DAY}:1:0\n", "x" * 300, "", None]
# Text no store can hold as sent (lone surrogates), and values longer than any parser reads.
HOSTILE = ["\ud800", "7\udfff", f"{DAY}:1:0\ud800", "0" * (MAX_PARSED_CHARS + 1),
           "0." + "5" * MAX_PARSED_CHARS, f"{DAY}T10:00:00" + " " * MAX_PARSED_CHARS + "Z"]
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


def column(choices: list[str | None]) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(choices), TEXT)


ROW = st.fixed_dictionaries({
    s.USER_ID: column(INTS), s.TRACK_ID: column(INTS), s.TS: column(TIMESTAMPS), s.MS_PLAYED: column(INTS),
    s.SKIPPED: column(BOOLS), s.MIX_ID: column(MIX_IDS), s.POSITION: column(INTS),
    s.POLICY: column(POLICIES), s.PROPENSITY: column(FLOATS)})
# Mostly valid rows too, so acceptance and duplicates (within the batch and against stored keys) are exercised.
GOOD = st.fixed_dictionaries({
    s.USER_ID: st.sampled_from(["7", "8"]), s.TRACK_ID: st.sampled_from(["1", "2", "3", "13", "4"]),
    s.TS: st.sampled_from([f"{DAY}T10:00:00Z", "1793527200000", f"{DAY}T10:00:00", f"{DAY}T11:00:00+01:00"]),
    s.MS_PLAYED: st.sampled_from(["100", "1000", "16000", "299999"]), s.SKIPPED: st.sampled_from(["true", "0"]),
    s.MIX_ID: st.sampled_from([f"{DAY}:7:0", None]), s.POSITION: st.sampled_from(["0", "3", None]),
    s.POLICY: st.sampled_from(["organic", "explore", None]), s.PROPENSITY: st.sampled_from(["0.5", "1", None])})


def both(rows: list[dict], existing: bool) -> tuple[list[str], list[str], pd.DataFrame, list[dict]]:
    """Reasons and accepted values of both paths; the frame holds the rows as a file door reads them (`readable_text`),
    the row path gets them as the API door does."""
    read = [{c: v if v is None else readable_text(v) for c, v in row.items()} for row in rows]
    frame = pd.DataFrame(read, columns=list(s.EVENT_COLUMNS)).astype(pd.StringDtype("pyarrow"))
    frame.index = pd.RangeIndex(1, len(rows) + 1)
    accepted, reasons = validate_events(frame, day=DAY, catalog_track_ids=TRACKS, track_durations_ms=DURATIONS,
                                        as_of=AS_OF, existing_keys=EXISTING if existing else None)
    values, row_reasons = validate_rows(rows, day=DAY, catalog=LOOKUP, as_of=AS_OF,
                                        existing_keys=EXISTING_KEYS if existing else frozenset())
    return reasons.tolist(), row_reasons, accepted, [v for v, r in zip(values, row_reasons, strict=True) if r == ""]


def as_records(accepted: pd.DataFrame) -> list[dict]:
    """The vectorised accepted frame in the row path's terms (ts in ns, None for missing)."""
    out = []
    for row in accepted.to_dict("records"):
        row[s.TS] = row[s.TS].value
        out.append({k: None if (v is pd.NA or (isinstance(v, float) and np.isnan(v))) else v for k, v in row.items()})
    return out


def assert_agree(rows: list[dict], existing: bool) -> None:
    reasons, row_reasons, accepted, row_accepted = both(rows, existing)
    assert row_reasons == reasons
    assert [{k: v[k] for k in s.EVENT_COLUMNS} for v in row_accepted] == as_records(accepted)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(ROW, GOOD), min_size=1, max_size=12), st.booleans())
def test_row_path_agrees_with_the_vectorised_rules(rows: list[dict], existing: bool) -> None:
    assert_agree(rows, existing)


@pytest.mark.parametrize("name,values", [("ints", INTS), ("timestamps", TIMESTAMPS), ("bools", BOOLS),
                                         ("floats", FLOATS), ("policies", POLICIES), ("mix_ids", MIX_IDS),
                                         ("hostile", HOSTILE)])
def test_every_listed_edge_value_agrees_in_every_column(name: str, values: list) -> None:
    """Each edge value in each column of an otherwise valid row (deterministic, independent of hypothesis' draw)."""
    base = {s.USER_ID: "8", s.TRACK_ID: "1", s.TS: f"{DAY}T09:00:00Z", s.MS_PLAYED: "1000", s.SKIPPED: "false",
            s.MIX_ID: f"{DAY}:8:0", s.POSITION: "2", s.POLICY: "explore", s.PROPENSITY: "0.5"}
    rows = [{**base, c: v} for c in s.EVENT_COLUMNS for v in values]
    assert_agree(rows, existing=True)


def test_bad_rows_carry_every_reason_in_rule_order() -> None:
    rows = [{s.USER_ID: "x", s.TRACK_ID: "999", s.TS: "2026-11-02T01:00:00Z", s.MS_PLAYED: "-1", s.SKIPPED: "maybe",
             s.POLICY: "explore", s.PROPENSITY: "2"},
            {s.USER_ID: "7", s.TRACK_ID: "1", s.TS: f"{DAY}T10:00:00Z", s.MS_PLAYED: "10", s.SKIPPED: "1"},
            {s.USER_ID: "8", s.TRACK_ID: "3", s.TS: f"{DAY}T10:00:00Z", s.MS_PLAYED: "1501", s.SKIPPED: "0"}]
    reasons, row_reasons, _, _ = both(rows, existing=True)
    assert row_reasons == reasons
    assert row_reasons == [
        "bad_type:user_id;bad_type:skipped;unknown_track;negative_duration;future_timestamp;outside_day;"
        "bad_propensity;missing_mix_id", "duplicate", "absurd_duration"]
    assert all(name in RULE_NAMES for r in row_reasons for name in r.split(";") if name)


def test_every_text_field_has_a_form_and_a_length() -> None:
    """Known answers on both paths: a mix id of another form, negative ids, values past the parsers' length and text
    no store can hold (a lone surrogate) are each refused by their column's rule, never accepted as sent."""
    good = {s.USER_ID: "8", s.TRACK_ID: "1", s.TS: f"{DAY}T09:00:00Z", s.MS_PLAYED: "1000", s.SKIPPED: "false",
            s.MIX_ID: f"{DAY}:8:0", s.POSITION: "2", s.POLICY: "explore", s.PROPENSITY: "0.5"}
    cases = {
        s.MIX_ID: [f"{DAY}/../../../tmp/x:1:0", "m", "2026-11-01:" + "9" * 250 + ":0", "2026-02-30:1:0", "\ud800"],
        s.USER_ID: ["-1", "\ud800"],
        s.TRACK_ID: ["-1"],
        s.TS: [f"{DAY}T09:00:00" + "0" * MAX_PARSED_CHARS + "Z"],
        s.PROPENSITY: ["0.5" + "0" * MAX_PARSED_CHARS],
        s.POLICY: ["explore\ud800"],
    }
    rows = [{**good, s.TS: f"{DAY}T10:{i:02d}:00Z", column: value}  # one time each: no row duplicates another
            for i, (column, value) in enumerate((c, v) for c, values in cases.items() for v in values)]
    reasons, row_reasons, accepted, _ = both([good, *rows], existing=False)
    assert row_reasons == reasons and accepted.index.tolist() == [1]
    expected = [f"bad_type:{c}" if c != s.POLICY else "bad_policy" for c, values in cases.items() for _ in values]
    assert reasons[1:] == expected
