"""Row-level rules for play events.

Every rule is evaluated on every row, so a rejected row carries all of its problems at once and
the producer can fix them in one round trip. Two evaluations of the same rules: `validate_events`
(vectorised over a DataFrame: files, at any size) and `validate_rows` (plain Python over a few
rows: the serving API, where pandas' per-call cost would dominate). Both read the same patterns,
limits and rule table below; where a parser is not a one-liner (ISO timestamps, floats) the row
path calls the very same pandas parser once per batch. `tests/unit/test_validation_rows.py`
checks they agree on random and adversarial input, reasons included.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core import schema as s


@dataclass(frozen=True)
class Rule:
    name: str  # e.g. "unknown_track"
    description: str  # one line, for docs and error messages


REQUIRED_COLUMNS: tuple[str, ...] = (s.USER_ID, s.TRACK_ID, s.TS, s.MS_PLAYED, s.SKIPPED)
OPTIONAL_COLUMNS: tuple[str, ...] = (s.MIX_ID, s.POSITION, s.POLICY, s.PROPENSITY)
DUPLICATE_KEY: tuple[str, ...] = (s.USER_ID, s.TRACK_ID, s.TS)
# A play longer than this is a stuck client or a unit error, whatever the track.
MAX_MS_PLAYED = 3_600_000
# Plays may run past the catalog duration (seek back, replay), but not by this much.
DURATION_SLACK = 1.5
# Values the parsers hand to pandas (times, floats) are refused unread beyond this length; every other text column
# has a bounded form of its own (integers, booleans, the policy names, the mix id).
MAX_PARSED_CHARS = 64
_TYPED_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, s.POSITION, s.PROPENSITY, s.MIX_ID)
_TYPE_HINTS = {
    s.USER_ID: "an integer >= 0",
    s.TRACK_ID: "an integer >= 0",
    s.TS: f"an ISO-8601 timestamp or epoch milliseconds (at most {MAX_PARSED_CHARS} characters)",
    s.MS_PLAYED: "an integer",
    s.SKIPPED: "true/false/1/0",
    s.POSITION: "an integer >= 0",
    s.PROPENSITY: f"a float (at most {MAX_PARSED_CHARS} characters)",
    s.MIX_ID: "a mix id YYYY-MM-DD:<user_id>:<mix index> naming a real day",
}
_NON_NEGATIVE: tuple[str, ...] = (s.USER_ID, s.TRACK_ID, s.POSITION)

RULES: tuple[Rule, ...] = (
    *(Rule(f"missing_{c}", f"{c} is null or empty") for c in REQUIRED_COLUMNS),
    *(Rule(f"bad_type:{c}", f"{c} is present but not {_TYPE_HINTS[c]}") for c in _TYPED_COLUMNS),
    Rule("unknown_track", "track_id is not in the catalog"),
    Rule("negative_duration", "ms_played < 0"),
    Rule(
        "absurd_duration",
        f"ms_played > {DURATION_SLACK} x the track's duration_ms, or > {MAX_MS_PLAYED} ms (1 hour)",
    ),
    Rule("future_timestamp", "ts is after the as-of time of the ingest"),
    Rule("outside_day", "ts is not within [day 00:00 UTC, next day 00:00 UTC)"),
    Rule("bad_policy", f"policy is not one of {', '.join(s.POLICIES)}"),
    Rule("bad_propensity", "propensity not in (0, 1], or missing for an exploit/explore policy"),
    Rule("missing_mix_id", "mix_id missing for an exploit/explore policy"),
    Rule("duplicate", "same (user_id, track_id, ts) as an earlier kept row of the file or of the day"),
)
RULE_NAMES: tuple[str, ...] = tuple(r.name for r in RULES)

# Patterns are read by Arrow's RE2 (vectorised) and Python's re (rows): ASCII classes only, since Python's \\d and \\s
# are Unicode-wide and RE2's are not. [\\t\\n\\f\\r ] is exactly RE2's \\s.
# Optional sign, 1-18 digits (fits int64), optional ".0": accepts "12", 12 and 12.0, rejects "1.5" and "1e3".
_INT_PATTERN = r"[+-]?[0-9]{1,18}(?:\.0*)?"
# An ISO-8601 time followed by a UTC offset (Z, +HH, +HHMM, +HH:MM), the forms pandas reads as tz-aware.
_TZ_PATTERN = r".*[0-9][T ][0-9].*[0-9][\t\n\f\r ]*(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)"
_INT_RE = re.compile(_INT_PATTERN)
_TZ_RE = re.compile(_TZ_PATTERN)
# The nanosecond range of a pandas timestamp: epoch milliseconds outside it are not a time (bad_type:ts).
_NS_MIN, _NS_MAX = pd.Timestamp.min.value, pd.Timestamp.max.value
# Arrow-backed strings: the regex and strip kernels are ~10x faster than Python strings at 1M rows.
_TEXT = pd.StringDtype("pyarrow")
_TRUE = ("true", "1")
_FALSE = ("false", "0")
_NON_ORGANIC = tuple(p for p in s.POLICIES if p != s.POLICY_ORGANIC)

Masks = dict[str, np.ndarray]


def readable_text(value: str) -> str:
    """`value` as text every store can hold: code points UTF-8 cannot encode (lone surrogates such as "\\ud800")
    become their backslash escapes, so the row can be quarantined as sent; no rule accepts the escaped form.

    Both doors pass every string they read through this before the rules judge it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def missing_columns(frame: pd.DataFrame) -> list[str]:
    """Required columns absent from a frame: without them no row can be judged."""
    return [c for c in REQUIRED_COLUMNS if c not in frame.columns]


def validate_events(
    frame: pd.DataFrame,
    *,
    day: str,
    catalog_track_ids: np.ndarray | set[int] | None,
    track_durations_ms: pd.Series | None = None,
    as_of: pd.Timestamp | None = None,
    existing_keys: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Split raw rows into accepted events and rejection reasons.

    `frame` holds the input as read (strings; typed columns are tolerated). Returns the accepted
    rows coerced to `schema.EVENT_DTYPES` (columns exactly `schema.EVENT_COLUMNS`, original index
    kept) and a reasons Series aligned to `frame.index`: "" for accepted rows, else the failed rule
    names joined by ";" in `RULES` order. `catalog_track_ids=None` skips unknown_track;
    `track_durations_ms` is indexed by track_id; `existing_keys` holds (user_id, track_id, ts) of
    rows already stored for the day.
    """
    if missing := missing_columns(frame):
        raise ValueError(f"missing required column(s): {', '.join(missing)}")
    index = frame.index
    text = {c: _as_text(frame[c]) if c in frame.columns else _absent(len(frame)) for c in s.EVENT_COLUMNS}
    fails: Masks = {}
    parsed = _parse(text, fails)
    _check_catalog(parsed, fails, catalog_track_ids, track_durations_ms)
    _check_time(parsed[s.TS], fails, day, as_of)
    _check_policy(parsed, text, fails)
    fails["duplicate"] = _duplicates(parsed, _any(fails, len(frame)), existing_keys)
    reasons = _join_reasons(fails, len(frame))
    accepted = _accepted(parsed, reasons == "", index)
    return accepted, pd.Series(reasons, index=index, name=s.QUARANTINE_REASON, dtype=object)


# --- text normalisation -------------------------------------------------------------------------


def _as_text(column: pd.Series) -> pd.Series:
    """Stripped strings with NA for null or blank: the one form every rule parses from."""
    if column.isna().all():  # an optional column nobody filled: skip the string kernels (their per-call cost)
        return _absent(len(column))
    text = column.reset_index(drop=True).astype(_TEXT).str.strip()
    return text.mask((text == "").fillna(False).to_numpy(bool))


def _absent(n: int) -> pd.Series:
    return pd.Series(pd.NA, index=pd.RangeIndex(n), dtype=_TEXT)


def _present(text: pd.Series) -> np.ndarray:
    return text.notna().to_numpy(bool)


def _fullmatch(text: pd.Series, pattern: str) -> np.ndarray:
    if not text.notna().any():
        return np.zeros(len(text), dtype=bool)
    return text.str.fullmatch(pattern).fillna(False).to_numpy(bool)


# --- rules 1-2: presence and types --------------------------------------------------------------


def _parse(text: dict[str, pd.Series], fails: Masks) -> dict[str, pd.Series]:
    """Coerce each column; record missing_* and bad_type:* masks in rule order."""
    for column in REQUIRED_COLUMNS:
        fails[f"missing_{column}"] = ~_present(text[column])
    parsed: dict[str, pd.Series] = {}
    for column in (s.USER_ID, s.TRACK_ID, s.MS_PLAYED, s.POSITION):
        parsed[column], fails[f"bad_type:{column}"] = _parse_int(text[column])
    parsed[s.TS], fails[f"bad_type:{s.TS}"] = _parse_ts(text[s.TS])
    parsed[s.SKIPPED], fails[f"bad_type:{s.SKIPPED}"] = _parse_bool(text[s.SKIPPED])
    for column in _NON_NEGATIVE:
        negative = parsed[column].lt(0).fillna(False).to_numpy(bool)
        fails[f"bad_type:{column}"] |= negative
        parsed[column] = parsed[column].mask(negative)
    parsed[s.PROPENSITY], fails[f"bad_type:{s.PROPENSITY}"] = _parse_float(text[s.PROPENSITY])
    parsed[s.MIX_ID], fails[f"bad_type:{s.MIX_ID}"] = _parse_mix_id(text[s.MIX_ID])
    parsed[s.POLICY] = text[s.POLICY]
    return parsed


def _parse_int(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Int64 values (NA where missing or bad) and the bad mask."""
    ok = _fullmatch(text, _INT_PATTERN)
    data = np.zeros(len(text), dtype=np.int64)
    if ok.any():
        digits = text[ok].str.replace(r"\.0*$", "", regex=True)
        data[ok] = digits.astype("int64").to_numpy()
    values = pd.Series(pd.arrays.IntegerArray(data, ~ok), index=text.index)
    return values, _present(text) & ~ok


def _parse_ts(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """UTC timestamps from epoch milliseconds (integers) or ISO-8601 (naive means UTC)."""
    present = _present(text) & ~_too_long(text)
    epoch = _fullmatch(text, _INT_PATTERN)
    aware = present & ~epoch & _fullmatch(text, _TZ_PATTERN)
    naive = present & ~epoch & ~aware
    ts = pd.Series(pd.NaT, index=text.index, dtype=s.EVENT_DTYPES[s.TS])
    if epoch.any():
        ms = text[epoch].str.replace(r"\.0*$", "", regex=True).astype("int64")
        ts[epoch] = pd.to_datetime(ms, unit="ms", utc=True, errors="coerce").astype(ts.dtype)
    # Separate calls: in one call pandas applies the last seen offset to later naive strings.
    for part in (aware, naive):
        if part.any():
            ts[part] = _parse_iso(text[part])
    return ts, _present(text) & ts.isna().to_numpy(bool)


def _parse_iso(text: pd.Series) -> pd.Series:
    """ISO-8601 strings of one kind (all with an offset, or all without) as UTC timestamps; NaT where unreadable."""
    return pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce").astype(s.EVENT_DTYPES[s.TS])


def _parse_bool(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    lowered = text.str.lower()
    true = lowered.isin(_TRUE).fillna(False).to_numpy(bool)
    false = lowered.isin(_FALSE).fillna(False).to_numpy(bool)
    values = pd.Series(pd.arrays.BooleanArray(true, ~(true | false)), index=text.index)
    return values, _present(text) & ~(true | false)


def _parse_float(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    readable = text.mask(_too_long(text))
    values = pd.Series(_to_float(readable.to_numpy(dtype=object, na_value=np.nan)), index=text.index)
    bad = _present(text) & ~np.isfinite(values.to_numpy())
    return values.mask(bad), bad


def _too_long(text: pd.Series) -> np.ndarray:
    if not text.notna().any():
        return np.zeros(len(text), dtype=bool)
    return text.str.len().gt(MAX_PARSED_CHARS).fillna(False).to_numpy(bool)


def _parse_mix_id(text: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Mix ids of the one form (`schema.mix_day`; NA where missing or bad) and the bad mask."""
    ok = _fullmatch(text, s.MIX_ID_FORM)
    if ok.any():
        days = text[ok].str.slice(0, 10)
        real = [day for day in days.unique() if s.calendar_day(day) is not None]
        ok[ok] = days.isin(real).to_numpy(bool)
    return text.mask(~ok), _present(text) & ~ok


def _to_float(values: np.ndarray) -> np.ndarray:
    """Floats parsed by pandas' numeric parser (NaN where unreadable)."""
    return np.asarray(pd.to_numeric(values, errors="coerce"), dtype=np.float64)


# --- rules 3-6: catalog, durations, time, policy ------------------------------------------------


def _check_catalog(
    parsed: dict[str, pd.Series],
    fails: Masks,
    catalog_track_ids: np.ndarray | set[int] | None,
    track_durations_ms: pd.Series | None,
) -> None:
    track = parsed[s.TRACK_ID].to_numpy(dtype=np.int64, na_value=0)
    known = parsed[s.TRACK_ID].notna().to_numpy(bool)
    if catalog_track_ids is not None:
        fails["unknown_track"] = known & ~np.isin(track, _id_array(catalog_track_ids))
    ms = parsed[s.MS_PLAYED]
    fails["negative_duration"] = ms.lt(0).fillna(False).to_numpy(bool)
    absurd = ms.gt(MAX_MS_PLAYED).fillna(False).to_numpy(bool)
    if track_durations_ms is not None:
        absurd |= ms.astype("float64").to_numpy(na_value=np.nan) > _duration_limit(track, known, track_durations_ms)
    fails["absurd_duration"] = absurd


def _id_array(ids: np.ndarray | set[int] | pd.Series) -> np.ndarray:
    values = np.fromiter(ids, dtype=np.int64, count=len(ids)) if isinstance(ids, set | frozenset) else ids
    return np.asarray(values, dtype=np.int64)


def _duration_limit(track: np.ndarray, known: np.ndarray, durations: pd.Series) -> np.ndarray:
    """Longest plausible ms_played per row; NaN (never trips) where the duration is unknown."""
    durations = _first_durations(durations)
    at = pd.Index(_id_array(durations.index)).get_indexer(track)
    values = np.append(durations.to_numpy(dtype=np.float64, na_value=np.nan), np.nan)
    at[~known | (at < 0)] = len(values) - 1
    return values[at] * DURATION_SLACK


def _first_durations(durations: pd.Series) -> pd.Series:
    """A track listed twice counts with its first duration."""
    return durations[~durations.index.duplicated()]


def _check_time(ts: pd.Series, fails: Masks, day: str, as_of: pd.Timestamp | None) -> None:
    start, end = day_bounds(day)
    if as_of is not None:
        fails["future_timestamp"] = ts.gt(_utc(as_of)).to_numpy(bool)
    fails["outside_day"] = (ts.lt(start) | ts.ge(end)).to_numpy(bool)


def _check_policy(parsed: dict[str, pd.Series], text: dict[str, pd.Series], fails: Masks) -> None:
    """Policy and its logging contract; then fills the organic default (a missing policy is user choice)."""
    policy = parsed[s.POLICY]
    given = _present(policy)
    fails["bad_policy"] = given & ~policy.isin(s.POLICIES).fillna(False).to_numpy(bool)
    non_organic = policy.isin(_NON_ORGANIC).fillna(False).to_numpy(bool)
    propensity = parsed[s.PROPENSITY].to_numpy()
    with np.errstate(invalid="ignore"):
        out_of_range = ~np.isnan(propensity) & ~((propensity > 0) & (propensity <= 1))
    fails["bad_propensity"] = out_of_range | (non_organic & ~_present(text[s.PROPENSITY]))
    fails["missing_mix_id"] = non_organic & ~_present(text[s.MIX_ID])  # a malformed one is bad_type:mix_id
    parsed[s.POLICY] = policy.fillna(s.POLICY_ORGANIC)


def day_bounds(day: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a day in UTC; only canonical YYYY-MM-DD, since days also name directories."""
    try:
        start = pd.Timestamp(day)
    except ValueError:
        start = pd.NaT
    if start is pd.NaT or start.strftime("%Y-%m-%d") != day:
        raise ValueError(f"day must be a date like 2026-11-01, got {day!r}")
    start = start.tz_localize("UTC")
    return start, start + pd.Timedelta(days=1)


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# --- rule 7: duplicates -------------------------------------------------------------------------


def _duplicates(parsed: dict[str, pd.Series], failed: np.ndarray, existing_keys: pd.DataFrame | None) -> np.ndarray:
    """Rows whose key is already stored, or equals the key of an earlier row that is kept.

    Only rows passing every other rule count as "kept": a bad first copy must not shadow a good
    later one, or the event would be lost altogether.
    """
    n = len(failed)
    keyed = np.flatnonzero(~(parsed[s.USER_ID].isna() | parsed[s.TRACK_ID].isna() | parsed[s.TS].isna()).to_numpy())
    keys = pd.DataFrame(
        {
            s.USER_ID: parsed[s.USER_ID].to_numpy(dtype=np.int64, na_value=0)[keyed],
            s.TRACK_ID: parsed[s.TRACK_ID].to_numpy(dtype=np.int64, na_value=0)[keyed],
            s.TS: _ts_ns(parsed[s.TS].iloc[keyed]),
        }
    )
    n_existing = 0
    if existing_keys is not None and len(existing_keys):
        stored = pd.DataFrame(
            {
                s.USER_ID: existing_keys[s.USER_ID].to_numpy(dtype=np.int64),
                s.TRACK_ID: existing_keys[s.TRACK_ID].to_numpy(dtype=np.int64),
                s.TS: _ts_ns(existing_keys[s.TS]),
            }
        )
        keys = pd.concat([stored, keys], ignore_index=True)
        n_existing = len(stored)
    group = keys.groupby(list(DUPLICATE_KEY), sort=False).ngroup().to_numpy()
    stored_groups, group = group[:n_existing], group[n_existing:]
    duplicate = np.isin(group, stored_groups)
    clean = ~failed[keyed]
    first_clean = np.full(group.max() + 1 if len(group) else 0, n, dtype=np.int64)
    groups, first = np.unique(group[clean], return_index=True)
    first_clean[groups] = keyed[clean][first]
    duplicate |= keyed > first_clean[group]
    out = np.zeros(n, dtype=bool)
    out[keyed] = duplicate
    return out


def _ts_ns(ts: pd.Series) -> np.ndarray:
    """Nanoseconds since epoch, whatever the stored unit."""
    return pd.to_datetime(ts, utc=True).astype("datetime64[ns, UTC]").astype("int64").to_numpy()


# --- assembly -----------------------------------------------------------------------------------


def _any(fails: Masks, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    for mask in fails.values():
        out |= mask
    return out


def _join_reasons(fails: Masks, n: int) -> np.ndarray:
    """';'-joined failed rule names per row, in RULES order; only failing rows pay for strings."""
    unknown = set(fails) - set(RULE_NAMES)
    assert not unknown, f"rules missing from RULES: {unknown}"
    reasons = np.full(n, "", dtype=object)
    for name in RULE_NAMES:
        mask = fails.get(name)
        if mask is None or not mask.any():
            continue
        current = reasons[mask]
        reasons[mask] = np.where(current == "", name, current + ";" + name)
    return reasons


def _accepted(parsed: dict[str, pd.Series], ok: np.ndarray, index: pd.Index) -> pd.DataFrame:
    columns = {c: parsed[c][ok].reset_index(drop=True) for c in s.EVENT_COLUMNS}
    frame = pd.DataFrame(columns)
    frame.index = index[ok]
    return frame.astype(s.EVENT_DTYPES)[list(s.EVENT_COLUMNS)]


# --- the same rules over a few rows, in plain Python --------------------------------------------
#
# For a handful of rows, pandas' per-call cost (~15 ms for the whole rule set, whatever the row count) dwarfs the
# work. These functions apply each rule above row by row, reading the same patterns, limits and RULES; the two
# parsers that are not one-liners (ISO timestamps, floats) are the very same pandas calls, made once per batch.

Key = tuple[int, int, int]  # (user_id, track_id, ts as ns since the epoch): the duplicate key of a row
_INT_COLUMNS = (s.USER_ID, s.TRACK_ID, s.MS_PLAYED, s.POSITION)


@dataclass(frozen=True)
class CatalogLookup:
    """The catalog as the row rules read it: track ids (None skips unknown_track) and durations by track id."""

    track_ids: Container[int] | None
    durations_ms: Mapping[int, float]

    @classmethod
    def of(cls, catalog_track_ids: Iterable[int] | None, track_durations_ms: pd.Series | None) -> CatalogLookup:
        """Built once per catalog (it costs O(catalog)); same arguments and meaning as `validate_events`'."""
        ids = None if catalog_track_ids is None else frozenset(_id_array(catalog_track_ids).tolist())
        by_track: dict[int, float] = {}
        if track_durations_ms is not None:
            first = _first_durations(track_durations_ms)
            by_track = dict(zip(_id_array(first.index).tolist(), first.to_numpy(dtype=np.float64, na_value=np.nan)
                                .tolist(), strict=True))
        return cls(ids, by_track)


@dataclass
class ParsedRow:
    """One row's typed values (None where missing or unreadable; ts in ns since the epoch) and the presence and
    type rules it failed."""

    values: dict[str, object]
    fails: set[str]
    text: dict[str, str | None]


def parse_rows(rows: Sequence[Mapping[str, str | None]]) -> list[ParsedRow]:
    """Rules 1-2 (missing_*, bad_type:*) for rows of text (None, or a string as a file would hold it)."""
    parsed = []
    for row in rows:
        text = {c: _row_text(row.get(c)) for c in s.EVENT_COLUMNS}
        fails = {f"missing_{c}" for c in REQUIRED_COLUMNS if text[c] is None}
        values: dict[str, object] = {s.MIX_ID: _row_mix_id(text[s.MIX_ID], fails), s.POLICY: text[s.POLICY]}
        for column in _INT_COLUMNS:
            values[column] = _row_int(text[column], column, fails)
        for column in _NON_NEGATIVE:
            if values[column] is not None and values[column] < 0:
                fails.add(f"bad_type:{column}")
                values[column] = None
        values[s.SKIPPED] = _row_bool(text[s.SKIPPED], fails)
        values[s.TS] = values[s.PROPENSITY] = None
        parsed.append(ParsedRow(values, fails, text))
    _row_timestamps(parsed)
    _row_floats(parsed)
    return parsed


def _row_text(value: str | None) -> str | None:
    """`_as_text` for one value: stripped (Python's and Arrow's whitespace are the same set), None if blank."""
    if value is None:
        return None
    value = readable_text(value).strip()
    return value or None


def _row_mix_id(text: str | None, fails: set[str]) -> str | None:
    if text is None:
        return None
    if s.mix_day(text) is None:
        fails.add(f"bad_type:{s.MIX_ID}")
        return None
    return text


def _row_int(text: str | None, column: str, fails: set[str]) -> int | None:
    if text is None:
        return None
    if not _INT_RE.fullmatch(text):
        fails.add(f"bad_type:{column}")
        return None
    return int(text.split(".", 1)[0])


def _row_bool(text: str | None, fails: set[str]) -> bool | None:
    if text is None:
        return None
    lowered = text.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return lowered in _TRUE
    fails.add(f"bad_type:{s.SKIPPED}")
    return None


def _row_timestamps(parsed: list[ParsedRow]) -> None:
    """ts as ns since the epoch: epoch milliseconds in the timestamp range, else ISO-8601 through `_parse_iso`
    (once per kind, offset or naive, as the vectorised path does)."""
    kinds: dict[bool, list[ParsedRow]] = {True: [], False: []}
    for row in parsed:
        text = row.text[s.TS]
        if text is None:
            continue
        if len(text) > MAX_PARSED_CHARS:
            continue
        if _INT_RE.fullmatch(text):
            ns = int(text.split(".", 1)[0]) * 1_000_000
            row.values[s.TS] = ns if _NS_MIN <= ns <= _NS_MAX else None
        else:
            kinds[bool(_TZ_RE.fullmatch(text))].append(row)
    for rows in kinds.values():
        if rows:
            stamps = _parse_iso(pd.Series([r.text[s.TS] for r in rows], dtype=_TEXT))
            for row, ns in zip(rows, stamps.array.asi8.tolist(), strict=True):
                row.values[s.TS] = None if ns == pd.NaT.value else ns
    for row in parsed:
        if row.text[s.TS] is not None and row.values[s.TS] is None:
            row.fails.add(f"bad_type:{s.TS}")


def _row_floats(parsed: list[ParsedRow]) -> None:
    given = [row for row in parsed if row.text[s.PROPENSITY] is not None]
    if not given:
        return
    texts = [None if len(r.text[s.PROPENSITY]) > MAX_PARSED_CHARS else r.text[s.PROPENSITY] for r in given]
    for row, value in zip(given, _to_float(np.array(texts, dtype=object)).tolist(), strict=True):
        if np.isfinite(value):
            row.values[s.PROPENSITY] = value
        else:
            row.fails.add(f"bad_type:{s.PROPENSITY}")


def judge_rows(
    parsed: list[ParsedRow],
    *,
    day: str,
    catalog: CatalogLookup,
    as_of: pd.Timestamp | None = None,
    existing_keys: Container[Key] = frozenset(),
) -> list[str]:
    """Rules 3-7 for rows of `parse_rows`: the reasons per row ("" for accepted; else the failed rule names joined
    by ";" in RULES order), as `validate_events` gives them. Fills the organic default into accepted rows' policy."""
    start, end = (t.value for t in day_bounds(day))
    limit = None if as_of is None else _utc(as_of).value
    reasons, kept = [], set()
    for row in parsed:
        values, fails = row.values, set(row.fails)
        track, ms, ts = values[s.TRACK_ID], values[s.MS_PLAYED], values[s.TS]
        if catalog.track_ids is not None and track is not None and track not in catalog.track_ids:
            fails.add("unknown_track")
        if ms is not None:
            duration = catalog.durations_ms.get(track) if track is not None else None
            if ms < 0:
                fails.add("negative_duration")
            if ms > MAX_MS_PLAYED or (duration is not None and float(ms) > duration * DURATION_SLACK):
                fails.add("absurd_duration")
        if ts is not None:
            if limit is not None and ts > limit:
                fails.add("future_timestamp")
            if ts < start or ts >= end:
                fails.add("outside_day")
        _row_policy(row, fails)
        if ts is not None and track is not None and values[s.USER_ID] is not None:
            key = (values[s.USER_ID], track, ts)
            if key in existing_keys or key in kept:
                fails.add("duplicate")
            elif not fails:
                kept.add(key)
        reasons.append(";".join(name for name in RULE_NAMES if name in fails))
        if not fails:
            values[s.POLICY] = values[s.POLICY] or s.POLICY_ORGANIC
    return reasons


def _row_policy(row: ParsedRow, fails: set[str]) -> None:
    policy, propensity = row.values[s.POLICY], row.values[s.PROPENSITY]
    if policy is not None and policy not in s.POLICIES:
        fails.add("bad_policy")
    non_organic = policy in _NON_ORGANIC
    if (propensity is not None and not 0 < propensity <= 1) or (non_organic and row.text[s.PROPENSITY] is None):
        fails.add("bad_propensity")
    if non_organic and row.text[s.MIX_ID] is None:
        fails.add("missing_mix_id")


def validate_rows(
    rows: Sequence[Mapping[str, str | None]],
    *,
    day: str,
    catalog: CatalogLookup,
    as_of: pd.Timestamp | None = None,
    existing_keys: Container[Key] = frozenset(),
) -> tuple[list[dict[str, object]], list[str]]:
    """`validate_events` for a few rows of text, without pandas' per-call cost: (typed values of every row, reasons
    per row). A row is accepted where its reason is ""; its values then hold every column of `schema.EVENT_COLUMNS`
    (ts as ns since the epoch, the policy's organic default filled in)."""
    parsed = parse_rows(rows)
    return [p.values for p in parsed], judge_rows(parsed, day=day, catalog=catalog, as_of=as_of,
                                                  existing_keys=existing_keys)
