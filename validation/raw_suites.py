"""The ingest data contracts (events, catalog) as Great Expectations suites.

`validation.events` enforces the event contract row by row in pandas, so that each bad row can be
quarantined with its reasons; GE cannot do that. These suites state the same contract
declaratively over what ingest *accepted*, so one tool documents and renders every data contract of
the platform (Data Docs), and a run that passes the pandas rules but fails the suite proves that the
two descriptions drifted apart. Each event expectation names the pandas rule it mirrors in
`meta["rule"]` ("schema" for the frame's shape, which `validate_events` guarantees by construction).

GE is imported lazily: importing it takes seconds and `pipeline.data.ingest` is imported by DAG files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from validation.events import DUPLICATE_KEY, DURATION_SLACK, MAX_MS_PLAYED, REQUIRED_COLUMNS, day_bounds

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite

EVENTS_SUITE = "raw_events"
CATALOG_SUITE = "catalog"
SCHEMA_RULE = "schema"  # the accepted frame's columns and dtypes (validate_events returns exactly these)
# Added by `contract_frame` when catalog durations are known: GE compares columns of one row, not a lookup.
MS_PLAYED_LIMIT = "ms_played_limit"
MAX_DURATION_MS = 3_600_000  # a catalog track longer than an hour is a unit error
DATA_SOURCE = "dailymix_raw"
_NON_ORGANIC_QUERY = f"{s.POLICY} in {[p for p in s.POLICIES if p != s.POLICY_ORGANIC]!r}"


@dataclass(frozen=True)
class ContractFailure:
    """One failed expectation, as a person reads it."""

    column: str
    expectation: str
    observed: object
    unexpected_count: int | None
    rule: str

    def __str__(self) -> str:
        count = "" if self.unexpected_count is None else f", {self.unexpected_count} unexpected"
        return f"{self.expectation}({self.column}) [rule {self.rule}]: observed {self.observed!r}{count}"


@dataclass(frozen=True)
class ContractResult:
    success: bool
    failures: list[ContractFailure]
    docs: Path  # Data Docs index page

    @property
    def failed_rules(self) -> set[str]:
        return {f.rule for f in self.failures}


# --- suites -------------------------------------------------------------------------------------


def events_suite(
    day: str,
    catalog_track_ids: Iterable[int] | np.ndarray,
    track_durations_ms: pd.Series | None = None,
    as_of: pd.Timestamp | None = None,
) -> ExpectationSuite:
    """The event contract over a typed accepted-events frame (see `contract_frame`).

    `track_durations_ms` (indexed by track_id) adds the per-track absurd_duration bound and the
    `MS_PLAYED_LIMIT` column to the expected schema; `as_of` adds future_timestamp. Duplicates are
    checked within the frame only: keys stored by other files of the day are the pandas rule's job.
    """
    import great_expectations as gx

    gx.get_context(mode="ephemeral")  # GE builds expectations against an active context
    e = gx.expectations
    start, end = day_bounds(day)
    columns = [*s.EVENT_COLUMNS, *([MS_PLAYED_LIMIT] if track_durations_ms is not None else [])]
    rules: list[tuple[str, object]] = [
        (SCHEMA_RULE, e.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True)),
        *((SCHEMA_RULE, e.ExpectColumnValuesToBeOfType(column=c, type_=_dtype_name(s.EVENT_DTYPES[c])))
          for c in (s.MIX_ID, s.POLICY)),
        *((f"missing_{c}", e.ExpectColumnValuesToNotBeNull(column=c)) for c in REQUIRED_COLUMNS),
        *((f"bad_type:{c}", e.ExpectColumnValuesToBeOfType(column=c, type_=_dtype_name(s.EVENT_DTYPES[c])))
          for c in (*REQUIRED_COLUMNS, s.POSITION, s.PROPENSITY)),  # mix_id's type: the schema rule above
        *((f"bad_type:{c}", e.ExpectColumnValuesToBeBetween(column=c, min_value=0))
          for c in (s.USER_ID, s.POSITION)),  # a negative track id is not in the catalog (catalog:negative_id)
        (f"bad_type:{s.MIX_ID}", e.ExpectColumnValuesToMatchRegex(column=s.MIX_ID, regex=f"^{s.MIX_ID_FORM}$")),
        (f"bad_type:{s.MIX_ID}", e.ExpectColumnValueLengthsToBeBetween(
            column=s.MIX_ID, min_value=1, max_value=s.MIX_ID_MAX_LENGTH)),
        ("unknown_track", e.ExpectColumnValuesToBeInSet(column=s.TRACK_ID, value_set=_ids(catalog_track_ids))),
        ("negative_duration", e.ExpectColumnValuesToBeBetween(column=s.MS_PLAYED, min_value=0)),
        ("absurd_duration", e.ExpectColumnValuesToBeBetween(column=s.MS_PLAYED, max_value=MAX_MS_PLAYED)),
        ("outside_day", e.ExpectColumnValuesToBeBetween(
            column=s.TS, min_value=start.to_pydatetime(), max_value=end.to_pydatetime(), strict_max=True)),
        ("bad_policy", e.ExpectColumnValuesToNotBeNull(column=s.POLICY)),  # ingest fills organic
        ("bad_policy", e.ExpectColumnValuesToBeInSet(column=s.POLICY, value_set=list(s.POLICIES))),
        ("bad_propensity", e.ExpectColumnValuesToBeBetween(
            column=s.PROPENSITY, min_value=0, max_value=1, strict_min=True)),
        ("bad_propensity", e.ExpectColumnValuesToNotBeNull(
            column=s.PROPENSITY, row_condition=_NON_ORGANIC_QUERY, condition_parser="pandas")),
        ("missing_mix_id", e.ExpectColumnValuesToNotBeNull(
            column=s.MIX_ID, row_condition=_NON_ORGANIC_QUERY, condition_parser="pandas")),
        ("duplicate", e.ExpectCompoundColumnsToBeUnique(column_list=list(DUPLICATE_KEY))),
    ]
    if track_durations_ms is not None:
        rules.append(("absurd_duration", e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A=MS_PLAYED_LIMIT, column_B=s.MS_PLAYED, or_equal=True, ignore_row_if="either_value_is_missing")))
    if as_of is not None:
        rules.append(("future_timestamp", e.ExpectColumnValuesToBeBetween(
            column=s.TS, max_value=_utc(as_of).to_pydatetime())))
    meta = {"dailymix": {"day": day, "mirrors": "validation.events.RULES"}}
    return _suite(EVENTS_SUITE, rules, meta)


def catalog_suite() -> ExpectationSuite:
    """The catalog contract: what unknown_track and absurd_duration silently rely on."""
    import great_expectations as gx

    gx.get_context(mode="ephemeral")
    e = gx.expectations
    rules: list[tuple[str, object]] = [
        (SCHEMA_RULE, e.ExpectTableColumnsToMatchSet(column_set=list(s.CATALOG_COLUMNS), exact_match=True)),
        *((f"catalog:missing_{c}", e.ExpectColumnValuesToNotBeNull(column=c))
          for c in (s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD, s.DURATION_MS, s.POPULARITY)),
        ("catalog:duplicate_track", e.ExpectColumnValuesToBeUnique(column=s.TRACK_ID)),
        # With catalog ids >= 0, unknown_track also keeps event track ids >= 0.
        ("catalog:negative_id", e.ExpectColumnValuesToBeBetween(column=s.TRACK_ID, min_value=0)),
        ("catalog:bad_duration", e.ExpectColumnValuesToBeBetween(
            column=s.DURATION_MS, min_value=1, max_value=MAX_DURATION_MS)),
        ("catalog:negative_popularity", e.ExpectColumnValuesToBeBetween(column=s.POPULARITY, min_value=0)),
    ]
    return _suite(CATALOG_SUITE, rules, {"dailymix": {"columns": list(s.CATALOG_COLUMNS)}})


def contract_frame(events: pd.DataFrame, track_durations_ms: pd.Series | None = None) -> pd.DataFrame:
    """The typed events as the events suite sees them: plus each play's duration limit when durations are known.

    The limit is the pandas rule's: DURATION_SLACK x the track's catalog duration, NaN (never trips)
    for a track without one.
    """
    frame = events.reset_index(drop=True)
    if track_durations_ms is None:
        return frame
    durations = track_durations_ms[~track_durations_ms.index.duplicated()].astype("float64")
    limit = durations.reindex(frame[s.TRACK_ID].to_numpy()).to_numpy() * DURATION_SLACK
    return frame.assign(**{MS_PLAYED_LIMIT: limit})


def _suite(name: str, rules: list[tuple[str, object]], meta: dict) -> ExpectationSuite:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name, meta=meta)
    for rule, expectation in rules:
        expectation.meta = {**(expectation.meta or {}), "rule": rule}
        suite.add_expectation(expectation)
    return suite


def _dtype_name(dtype: str) -> str:
    """The name GE compares for a pandas column: the dtype's scalar type (Timestamp, str, int64, ...).

    GE cannot tell Int64 from int64 this way; nullability is what the not-null expectations are for.
    """
    return pd.api.types.pandas_dtype(dtype).type.__name__


def _ids(ids: Iterable[int] | np.ndarray) -> list[int]:
    return sorted({int(i) for i in ids})


def _utc(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# --- validation ---------------------------------------------------------------------------------


def validate_contract(frame: pd.DataFrame, suite: ExpectationSuite, context_root: Path, batch_name: str
                      ) -> ContractResult:
    """Validate `frame` against `suite` with a checkpoint of the file-backed GE project under `context_root`.

    The result is stored and Data Docs are updated, so a refused ingest can be read in the browser.
    """
    import great_expectations as gx

    context = _quiet(gx.get_context(mode="file", project_root_dir=str(context_root)))
    asset = _asset(context, suite.name)
    batch = next((b for b in asset.batch_definitions if b.name == "batch"), None) or \
        asset.add_batch_definition_whole_dataframe("batch")
    stored = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{suite.name}-contract", data=batch, suite=stored))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=f"{suite.name}-contract", validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")], result_format="SUMMARY"))
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=gx.RunIdentifier(run_name=batch_name))
    failures = [_failure(outcome) for run in result.run_results.values() for outcome in run.results
                if not outcome.success]
    docs = Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return ContractResult(success=bool(result.success), failures=failures, docs=docs)


def check(frame: pd.DataFrame, suite: ExpectationSuite) -> list[ContractFailure]:
    """The failures of `frame` against `suite`, in memory: no stored result, no Data Docs, a fraction of the time."""
    import great_expectations as gx

    context = _quiet(gx.get_context(mode="ephemeral"))
    batch = context.data_sources.add_pandas(DATA_SOURCE).add_dataframe_asset(suite.name) \
        .add_batch_definition_whole_dataframe("batch").get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format="SUMMARY")
    return [_failure(outcome) for outcome in result.results if not outcome.success]


def _quiet(context):
    """No progress bars: they flood task logs (as in validation.skew)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _asset(context, name: str):
    """The dataframe asset for a suite (a data source fetched with `get` is detached from the context)."""
    source = context.data_sources.add_or_update_pandas(DATA_SOURCE)
    return next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)


def _failure(outcome) -> ContractFailure:
    config = outcome.expectation_config
    kwargs = config.kwargs
    result = outcome.result or {}
    exception = (outcome.exception_info or {}).get("exception_message")
    observed = result.get("observed_value", result.get("partial_unexpected_list", exception))
    column = kwargs.get("column") or ",".join(
        str(c) for c in kwargs.get("column_list") or [kwargs.get("column_A"), kwargs.get("column_B")] if c) or "table"
    count = result.get("unexpected_count")
    return ContractFailure(column=column, expectation=config.type, observed=observed,
                           unexpected_count=None if count is None else int(count),
                           rule=str((config.meta or {}).get("rule", "?")))
