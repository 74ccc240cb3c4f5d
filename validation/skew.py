"""Training–serving skew as Great Expectations suites.

A suite is generated from the entity features the model was trained with: for numeric columns,
bands on mean, standard deviation, median and null share; for categorical columns, the value
set and a KL-divergence bound. Each band is centred on the training reference day and is
`z` times wide the larger of two spreads measured on the training data itself: how much the
statistic moved from day to day across the profile window, and its sampling standard error.
No hand-picked constants: widen or narrow the gate with `z` alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SMOOTHING = 0.5  # pseudo-count per category, so KL stays finite for rare categories


@dataclass(frozen=True)
class Band:
    low: float
    high: float


def _band(reference: float, daily: list[float], sampling_se: float, z: float) -> Band:
    spread = float(np.std(daily, ddof=1)) if len(daily) > 1 else 0.0
    half = z * max(spread, sampling_se)
    return Band(reference - half, reference + half)


def _numeric_expectations(column: str, days: list[pd.Series], z: float) -> list:
    import great_expectations as gx

    ref = days[-1].astype(float)
    n, sd = max(int(ref.notna().sum()), 1), float(ref.std(ddof=1) or 0.0)
    null_share = float(ref.isna().mean())
    mean = _band(float(ref.mean()), [float(d.mean()) for d in days], sd / np.sqrt(n), z)
    stdev = _band(sd, [float(d.std(ddof=1)) for d in days], sd / np.sqrt(2 * max(n - 1, 1)), z)
    median = _band(float(ref.median()), [float(d.median()) for d in days], 1.2533 * sd / np.sqrt(n), z)
    nulls = _band(null_share, [float(d.isna().mean()) for d in days], max(np.sqrt(null_share * (1 - null_share) / n),
                                                                           1.0 / n), z)
    return [
        gx.expectations.ExpectColumnMeanToBeBetween(column=column, min_value=mean.low, max_value=mean.high),
        gx.expectations.ExpectColumnStdevToBeBetween(column=column, min_value=max(stdev.low, 0.0),
                                                     max_value=stdev.high),
        gx.expectations.ExpectColumnMedianToBeBetween(column=column, min_value=median.low, max_value=median.high),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=column, mostly=float(np.clip(1 - nulls.high, 0, 1))),
    ]


def distribution(values: pd.Series, categories: list[str]) -> np.ndarray:
    counts = values.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy(dtype=float)
    return (counts + SMOOTHING) / (counts.sum() + SMOOTHING * len(categories))


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def _categorical_expectations(column: str, days: list[pd.Series], z: float) -> list:
    import great_expectations as gx

    categories = sorted(set().union(*(set(d.dropna().astype(str)) for d in days)))
    reference = distribution(days[-1], categories)
    daily = [kl_divergence(distribution(d, categories), reference) for d in days[:-1]]
    sampling = (len(categories) - 1) / (2 * max(len(days[-1]), 1))  # E[KL] of a same-size sample
    threshold = max(float(np.mean(daily) + z * np.std(daily)) if daily else 0.0, z * sampling)
    return [
        gx.expectations.ExpectColumnDistinctValuesToBeInSet(column=column, value_set=categories),
        gx.expectations.ExpectColumnKLDivergenceToBeLessThan(
            column=column, partition_object={"values": categories, "weights": reference.tolist()},
            threshold=threshold),
    ]


def build_suite(name: str, days: list[pd.DataFrame], numeric: list[str], categorical: list[str], z: float):
    """A suite from daily training frames (oldest first; the last is the reference day)."""
    import great_expectations as gx

    gx.get_context(mode="ephemeral")  # GE builds expectations against an active context
    suite = gx.ExpectationSuite(name=name, meta={"dailymix": {"z": z, "profile_days": len(days),
                                                              "reference_rows": len(days[-1])}})
    for column in numeric:
        for expectation in _numeric_expectations(column, [d[column] for d in days], z):
            suite.add_expectation(expectation)
    for column in categorical:
        for expectation in _categorical_expectations(column, [d[column] for d in days], z):
            suite.add_expectation(expectation)
    return suite


def save_suite(suite, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite.to_json_dict(), indent=2, sort_keys=True, default=str))
    return path


def load_suite(path: Path):
    import great_expectations as gx

    gx.get_context(mode="ephemeral")
    return gx.ExpectationSuite(**json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class Failure:
    """One failed expectation, as a person reads it."""

    batch: str
    column: str
    expectation: str
    observed: object
    expected: str

    def __str__(self) -> str:
        return f"{self.batch}.{self.column}: {self.expectation} observed {self.observed!r}, expected {self.expected}"


def _expected(kwargs: dict) -> str:
    if "min_value" in kwargs:
        return f"in [{kwargs['min_value']:.4g}, {kwargs['max_value']:.4g}]"
    if "threshold" in kwargs:
        return f"< {kwargs['threshold']:.4g}"
    if "mostly" in kwargs:
        return f"non-null share >= {kwargs['mostly']:.4g}"
    if "value_set" in kwargs:
        return f"values in {kwargs['value_set']}"
    return str(kwargs)


def validate(context_root: Path, batches: dict[str, pd.DataFrame], suites: dict[str, object], run_name: str
             ) -> tuple[list[Failure], Path]:
    """Validate each named batch against its suite in a file-backed GE project; write Data Docs.

    Returns the failures (empty = pass) and the Data Docs index page.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(context_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # task logs, not terminals
    source = context.data_sources.add_or_update_pandas("dailymix_serving")
    definitions = []
    for name, suite in suites.items():
        asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
        batch = next((b for b in asset.batch_definitions if b.name == "nightly"), None) or \
            asset.add_batch_definition_whole_dataframe("nightly")
        stored = context.suites.add_or_update(suite)
        definitions.append(context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{name}-gate", data=batch, suite=stored)))
    failures: list[Failure] = []
    for definition in definitions:
        name = definition.data.data_asset.name
        checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
            name=f"{name}-checkpoint", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")], result_format="SUMMARY"))
        result = checkpoint.run(batch_parameters={"dataframe": batches[name]}, run_id=gx.RunIdentifier(run_name))
        for validation in result.run_results.values():
            for outcome in validation.results:
                if not outcome.success:
                    config = outcome.expectation_config
                    observed = (outcome.result or {}).get("observed_value", outcome.exception_info or "n/a")
                    failures.append(Failure(name, config.kwargs.get("column", "?"), config.type,
                                            _rounded(observed), _expected(config.kwargs)))
    docs = Path(context_root) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return failures, docs


def _rounded(value):
    return round(float(value), 6) if isinstance(value, (int, float, np.floating)) else value
