"""The ingest contracts as GE suites, against known answers: one offending row fails exactly its rule.

GE is slow (seconds to import, ~1 s per stored validation), so suites are module-scoped and the
per-rule cases validate in memory (`check`); the file-backed checkpoint runs only in the ingest tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.paths import Layout
from pipeline.data.ingest import IngestError, ingest_file
from validation import raw_suites
from validation.events import RULE_NAMES, validate_events
from validation.raw_suites import SCHEMA_RULE, catalog_suite, check, contract_frame, events_suite, validate_contract

pytestmark = pytest.mark.slow  # real training, Great Expectations or fuzzing: seconds per test

DAY = "2026-11-01"
START = pd.Timestamp(DAY, tz="UTC")
AS_OF = START + pd.Timedelta(hours=20)
TRACKS = np.arange(1, 51)
SHORT_TRACK = 7  # catalog duration 100_000 ms (limit 150_000); all others 200_000
DURATIONS = pd.Series(np.where(TRACKS == SHORT_TRACK, 100_000, 200_000), index=TRACKS)
N_ROWS = 60
ROW = 4  # the offending row of most cases: organic
PLAYLIST_ROW = 5  # from a mix: with mix_id, position and propensity
Mutation = Callable[[pd.DataFrame], None]


def text_rows(n: int = N_ROWS) -> pd.DataFrame:
    """Valid events as a producer sends them (text); odd rows come from a mix, one with propensity exactly 1."""
    i = np.arange(n)
    mixed = i % 2 == 1
    return pd.DataFrame({
        s.USER_ID: (i % 20 + 1).astype(str),
        s.TRACK_ID: (i % 50 + 1).astype(str),
        s.TS: [(START + pd.Timedelta(minutes=10 * k)).isoformat() for k in i],
        s.MS_PLAYED: (1_000 + 1_000 * i).astype(str),
        s.SKIPPED: np.where(i % 3 == 0, "true", "false"),
        s.MIX_ID: np.where(mixed, [s.mix_id(DAY, k % 20 + 1, k % 6) for k in i], None),
        s.POSITION: np.where(mixed, (i % 30).astype(str), None),
        s.POLICY: np.where(mixed, np.where(i % 4 == 1, s.POLICY_EXPLOIT, s.POLICY_EXPLORE), None),
        s.PROPENSITY: np.where(mixed, np.where(i == 1, "1.0", "0.25"), None),
    }, index=pd.RangeIndex(1, n + 1, name=s.SOURCE_ROW))


def full_catalog() -> pd.DataFrame:
    """A catalog with every schema column, durations as in DURATIONS."""
    n = len(TRACKS)
    return pd.DataFrame({
        s.TRACK_ID: TRACKS,
        s.TITLE: [f"Track {t}" for t in TRACKS],
        s.ARTIST_ID: TRACKS % 10,
        s.ARTIST_NAME: [f"Artist {t % 10}" for t in TRACKS],
        s.GENRE: pd.array(["rock", "jazz"] * (n // 2), dtype="string"),
        s.MOOD: pd.array(["calm"] * n, dtype="string"),
        s.RELEASE_DATE: pd.Timestamp("2020-01-01"),
        s.DURATION_MS: DURATIONS.to_numpy(),
        s.POPULARITY: np.full(n, 1 / n),
    })[list(s.CATALOG_COLUMNS)]


def accept(text: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    return validate_events(text, day=DAY, catalog_track_ids=TRACKS, track_durations_ms=DURATIONS, as_of=AS_OF)


@pytest.fixture(scope="module")
def suite():
    return events_suite(DAY, TRACKS, DURATIONS, as_of=AS_OF)


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    accepted, reasons = accept(text_rows())
    assert (reasons == "").all()
    return accepted.reset_index(drop=True)


def failed_rules(frame: pd.DataFrame, suite) -> dict[str, int | None]:
    """Failed rule -> unexpected rows (the largest count of its failed expectations)."""
    out: dict[str, int | None] = {}
    for failure in check(contract_frame(frame, DURATIONS), suite):
        out[failure.rule] = max(out.get(failure.rule) or 0, failure.unexpected_count or 0) or None
    return out


# --- the events suite ---------------------------------------------------------------------------


def test_every_pandas_rule_is_mirrored_and_nothing_else(suite) -> None:
    rules = [e.meta["rule"] for e in suite.expectations]
    assert set(rules) - {SCHEMA_RULE} == set(RULE_NAMES)
    assert suite.name == "raw_events"


def test_a_good_frame_passes(good, suite) -> None:
    assert failed_rules(good, suite) == {}


def _put(column: str, value: object, row: int = ROW, dtype: str | None = None) -> Mutation:
    def mutate(frame: pd.DataFrame) -> None:
        if dtype:
            frame[column] = frame[column].astype(dtype)
        frame.loc[row, column] = value
    return mutate


def _retype(column: str, dtype: str) -> Mutation:
    def mutate(frame: pd.DataFrame) -> None:
        frame[column] = frame[column].astype(dtype)
    return mutate


def _copy_key(frame: pd.DataFrame) -> None:
    for column in (s.USER_ID, s.TRACK_ID, s.TS):
        frame.loc[ROW, column] = frame.loc[ROW - 1, column]


def _extra_column(frame: pd.DataFrame) -> None:
    frame["country"] = "SE"


EVENT_CASES: dict[str, tuple[Mutation, str]] = {
    "missing_user_id": (_put(s.USER_ID, pd.NA, dtype="Int64"), "missing_user_id"),
    "missing_track_id": (_put(s.TRACK_ID, pd.NA, dtype="Int64"), "missing_track_id"),
    "missing_ts": (_put(s.TS, pd.NaT), "missing_ts"),
    "missing_ms_played": (_put(s.MS_PLAYED, pd.NA, dtype="Int64"), "missing_ms_played"),
    "missing_skipped": (_put(s.SKIPPED, pd.NA, dtype="boolean"), "missing_skipped"),
    "float_user_id": (_put(s.USER_ID, 1.5, dtype="float64"), "bad_type:user_id"),
    "float_track_id": (_retype(s.TRACK_ID, "float64"), "bad_type:track_id"),
    "float_ms_played": (_retype(s.MS_PLAYED, "float64"), "bad_type:ms_played"),
    "integer_skipped": (_retype(s.SKIPPED, "int64"), "bad_type:skipped"),
    "float_position": (_retype(s.POSITION, "Float64"), "bad_type:position"),
    "negative_position": (_put(s.POSITION, -1, row=PLAYLIST_ROW), "bad_type:position"),
    "negative_user_id": (_put(s.USER_ID, -1), "bad_type:user_id"),
    "mix_id_of_another_form": (_put(s.MIX_ID, f"{DAY}/../../x:1:0", row=PLAYLIST_ROW), "bad_type:mix_id"),
    "mix_id_too_long": (_put(s.MIX_ID, f"{DAY}:{'9' * 300}:0", row=PLAYLIST_ROW), "bad_type:mix_id"),
    "float32_propensity": (_retype(s.PROPENSITY, "float32"), "bad_type:propensity"),
    "unknown_track": (_put(s.TRACK_ID, 999), "unknown_track"),
    "negative_duration": (_put(s.MS_PLAYED, -5), "negative_duration"),
    "longer_than_an_hour": (_put(s.MS_PLAYED, 3_600_001), "absurd_duration"),
    "longer_than_the_track": (_put(s.MS_PLAYED, 150_001, row=SHORT_TRACK - 1), "absurd_duration"),
    "future_timestamp": (_put(s.TS, AS_OF + pd.Timedelta(seconds=1)), "future_timestamp"),
    "before_the_day": (_put(s.TS, START - pd.Timedelta(seconds=1)), "outside_day"),
    "unknown_policy": (_put(s.POLICY, "shuffle"), "bad_policy"),
    "null_policy": (_put(s.POLICY, pd.NA), "bad_policy"),
    "zero_propensity": (_put(s.PROPENSITY, 0.0, row=PLAYLIST_ROW), "bad_propensity"),
    "propensity_above_one": (_put(s.PROPENSITY, 1.01, row=PLAYLIST_ROW), "bad_propensity"),
    "exploit_without_propensity": (_put(s.PROPENSITY, np.nan, row=PLAYLIST_ROW), "bad_propensity"),
    "exploit_without_mix_id": (_put(s.MIX_ID, pd.NA, row=PLAYLIST_ROW), "missing_mix_id"),
    "duplicate": (_copy_key, "duplicate"),  # GE counts both copies, the pandas rule the later one
    "extra_column": (_extra_column, SCHEMA_RULE),
    "categorical_policy": (_retype(s.POLICY, "category"), SCHEMA_RULE),
}


def test_each_offence_fails_exactly_its_rule(good, suite) -> None:
    wrong = {}
    for name, (mutate, rule) in EVENT_CASES.items():
        frame = good.copy()
        mutate(frame)
        failed = failed_rules(frame, suite)
        if set(failed) != {rule} or failed[rule] not in (None, 2 if rule == "duplicate" else 1):
            wrong[name] = failed
    assert wrong == {}, "cases failing other rules (or more rows) than their own"


def test_the_typed_cases_are_rejected_by_the_pandas_rules_too(good) -> None:
    """The same offences, in text: the rule the suite names is the rule the quarantine names."""
    cases = {
        "missing_skipped": (s.SKIPPED, None, "missing_skipped"),
        "unknown_track": (s.TRACK_ID, "999", "unknown_track"),
        "longer_than_the_track": (s.MS_PLAYED, "150001", "absurd_duration"),
        "future_timestamp": (s.TS, (AS_OF + pd.Timedelta(seconds=1)).isoformat(), "future_timestamp"),
        "zero_propensity": (s.PROPENSITY, "0", "bad_propensity"),
        "negative_user_id": (s.USER_ID, "-1", "bad_type:user_id"),
        "mix_id_of_another_form": (s.MIX_ID, "mix-1", "bad_type:mix_id"),
    }
    for column, value, rule in cases.values():
        text = text_rows()
        row = text.index[SHORT_TRACK - 1] if column == s.MS_PLAYED else text.index[PLAYLIST_ROW]
        text.loc[row, column] = value
        _, reasons = accept(text)
        assert reasons[reasons != ""].to_dict() == {row: rule}


def mixed_text(seed: int, n: int = 1_500) -> pd.DataFrame:
    """Good rows with ~40% of them broken in one of many ways, some harmlessly (other formats)."""
    rng = np.random.default_rng(seed)
    text = text_rows(n).astype(object)
    text[s.TS] = [(START + pd.Timedelta(seconds=int(x))).isoformat() for x in rng.integers(0, 72_000, n)]
    text[s.TRACK_ID] = rng.integers(1, 51, n).astype(str)
    text[s.MS_PLAYED] = rng.integers(0, 160_000, n).astype(str)
    edits = [
        (s.USER_ID, None), (s.USER_ID, "abc"), (s.USER_ID, "12.0"), (s.TRACK_ID, "999"), (s.TRACK_ID, "1.5"),
        (s.TS, None), (s.TS, "yesterday"), (s.TS, "2026-10-31T23:59:59Z"), (s.TS, "2026-11-02T00:00:00Z"),
        (s.TS, "2026-11-01T22:00:00Z"), (s.TS, "2026-11-01T12:00:00+02:00"), (s.TS, str(START.value // 10**6)),
        (s.MS_PLAYED, "-1"), (s.MS_PLAYED, "3600001"), (s.MS_PLAYED, "299999"), (s.MS_PLAYED, None),
        (s.SKIPPED, "maybe"), (s.SKIPPED, "1"), (s.POLICY, "shuffle"), (s.POLICY, s.POLICY_EXPLOIT),
        (s.PROPENSITY, "0"), (s.PROPENSITY, "1.5"), (s.PROPENSITY, "x"), (s.PROPENSITY, None), (s.MIX_ID, None),
        (s.POSITION, "-2"), (s.POSITION, "first"), (s.USER_ID, "-3"), (s.MIX_ID, "mix-1"), (s.MIX_ID, "\\ud800"),
    ]
    for row in np.flatnonzero(rng.random(n) < 0.4):
        column, value = edits[rng.integers(len(edits))]
        text.iloc[row, text.columns.get_loc(column)] = value
    dup = rng.choice(n, size=n // 20, replace=False)
    text.iloc[dup[1:], [text.columns.get_loc(c) for c in (s.USER_ID, s.TRACK_ID, s.TS)]] = \
        text.iloc[dup[:-1], [text.columns.get_loc(c) for c in (s.USER_ID, s.TRACK_ID, s.TS)]].to_numpy()
    return text


@pytest.mark.parametrize("seed", [1, 2])
def test_what_the_pandas_rules_accept_the_suite_accepts(suite, seed: int) -> None:
    accepted, reasons = accept(mixed_text(seed))
    rejected_by = set(reasons[reasons != ""].str.split(";").explode())
    assert len(accepted) > 500 and len(rejected_by) >= 15, "the file must exercise most rules"
    assert failed_rules(accepted, suite) == {}


# --- the catalog suite --------------------------------------------------------------------------


def test_catalog_known_answers() -> None:
    suite = catalog_suite()
    assert suite.name == "catalog"
    assert check(full_catalog(), suite) == []
    cases: dict[str, tuple[str, object, str | None, str]] = {
        "duplicate": (s.TRACK_ID, 1, None, "catalog:duplicate_track"),
        "null_track": (s.TRACK_ID, pd.NA, "Int64", "catalog:missing_track_id"),
        "negative_track": (s.TRACK_ID, -1, None, "catalog:negative_id"),
        "null_artist": (s.ARTIST_ID, pd.NA, "Int64", "catalog:missing_artist_id"),
        "null_genre": (s.GENRE, pd.NA, None, "catalog:missing_genre"),
        "null_mood": (s.MOOD, pd.NA, None, "catalog:missing_mood"),
        "zero_duration": (s.DURATION_MS, 0, None, "catalog:bad_duration"),
        "duration_in_microseconds": (s.DURATION_MS, 3_600_001, None, "catalog:bad_duration"),
        "negative_popularity": (s.POPULARITY, -0.1, None, "catalog:negative_popularity"),
    }
    wrong = {}
    for name, (column, value, dtype, rule) in cases.items():
        catalog = full_catalog()
        _put(column, value, dtype=dtype)(catalog)
        failed = {(f.rule, f.unexpected_count) for f in check(catalog, suite)}
        if {r for r, _ in failed} != {rule} or any(count not in (None, 1, 2) for _, count in failed):
            wrong[name] = failed
    assert wrong == {}
    assert {f.rule for f in check(full_catalog().drop(columns=s.TITLE), suite)} >= {SCHEMA_RULE}


# --- the file-backed checkpoint and ingest ------------------------------------------------------


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("validation")


def write_csv(text: pd.DataFrame, path: Path) -> Path:
    text.to_csv(path, index=False)
    return path


def test_validate_contract_reports_failures_and_writes_docs(good, suite, gx_root) -> None:
    frame = good.copy()
    frame.loc[ROW, s.TRACK_ID] = 999
    result = validate_contract(contract_frame(frame, DURATIONS), suite, gx_root, "unknown-track")
    assert not result.success and result.docs.exists()
    [failure] = result.failures
    assert (failure.rule, failure.column, failure.unexpected_count) == ("unknown_track", s.TRACK_ID, 1)
    assert failure.expectation == "expect_column_values_to_be_in_set" and failure.observed == [999]


def test_ingest_with_contract_matches_ingest_without(tmp_path, gx_root) -> None:
    text = text_rows()
    text.loc[text.index[ROW], s.TRACK_ID] = "999"  # quarantined as before
    source = write_csv(text, tmp_path / "events.csv")
    plain, checked = Layout(tmp_path / "plain"), Layout(tmp_path / "checked")
    expected = ingest_file(source, DAY, plain, full_catalog(), max_bad_row_share=0.05, as_of=AS_OF)
    report = ingest_file(source, DAY, checked, full_catalog(), max_bad_row_share=0.05, as_of=AS_OF,
                         contract_root=gx_root)
    assert (report.accepted, report.quarantined) == (expected.accepted, expected.quarantined) == (N_ROWS - 1, 1)
    pd.testing.assert_frame_equal(pd.read_parquet(report.raw_path), pd.read_parquet(expected.raw_path))
    pd.testing.assert_frame_equal(pd.read_parquet(report.quarantine_path), pd.read_parquet(expected.quarantine_path))
    assert (gx_root / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html").exists()


def test_a_disagreeing_contract_refuses_the_file(tmp_path, gx_root, monkeypatch) -> None:
    """A stricter suite than the rules stands for any drift between the two: nothing reaches raw."""
    import great_expectations as gx

    def stricter(*args, **kwargs):
        suite = events_suite(*args, **kwargs)
        suite.add_expectation(gx.expectations.ExpectColumnValuesToBeBetween(
            column=s.USER_ID, max_value=5, meta={"rule": "test:stricter"}))
        return suite

    layout = Layout(tmp_path / "home")
    source = write_csv(text_rows(), tmp_path / "events.csv")
    earlier = ingest_file(source, DAY, layout, full_catalog())
    monkeypatch.setattr(raw_suites, "events_suite", stricter)
    with pytest.raises(IngestError, match=r"events\.csv: .*contract.*test:stricter") as refused:
        ingest_file(source, DAY, layout, full_catalog(), contract_root=gx_root)
    assert refused.value.report.raw_path is None
    assert earlier.raw_path.exists()  # a refused file touches nothing stored before


def test_a_broken_catalog_refuses_the_file_before_anything_is_written(tmp_path, gx_root) -> None:
    layout = Layout(tmp_path / "home")
    catalog = pd.concat([full_catalog(), full_catalog().head(1)], ignore_index=True)
    with pytest.raises(IngestError, match=r"events\.csv: the catalog .*catalog:duplicate_track"):
        ingest_file(write_csv(text_rows(), tmp_path / "events.csv"), DAY, layout, catalog, contract_root=gx_root)
    assert not layout.raw_events(DAY).exists() and not layout.quarantine(DAY).exists()
