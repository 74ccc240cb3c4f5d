"""Health of the loop: diversity of what is published, engagement with it, and drift alerts.

A recommender retrained on its own output narrows: genre entropy falls and skips rise. The
metrics here are computed per day from the publication and the day's events and compared with
a trailing baseline.

`FLOW` is the monitor flow its DAG and the simulation run: the day's health row, then MLflow and the drift check.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.alerts import raise_alerts
from pipeline.core.config import MonitorConfig, Settings
from pipeline.core.flow import Flow, FlowRun, Step
from pipeline.core.io import atomic_write_json, read_json
from pipeline.core.paths import Layout
from pipeline.data.catalog import read_catalog
from pipeline.data.events import read_raw_events
from pipeline.publish.files import read_publication

log = logging.getLogger(__name__)
SKIP_METRIC = "skip_rate"


def entropy(labels: pd.Series) -> float:
    """Shannon entropy (bits) of the distribution of labels; 0 for one label or none."""
    p = labels.value_counts(normalize=True).to_numpy()
    return float(-(p * np.log2(p)).sum()) if len(p) else 0.0


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all equal, → 1 when one item has everything."""
    values = np.sort(np.asarray(counts, dtype=float))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1).dot(values) / (n * total))


def publication_metrics(slots: pd.DataFrame, catalog_size: int) -> dict[str, float]:
    """Diversity and composition of one night's published slots."""
    if slots.empty:
        return {"users": 0, "mixes": 0, "slots": 0}
    per_mix = slots.groupby([s.USER_ID, s.MIX_INDEX])
    exposures = slots[s.TRACK_ID].value_counts().to_numpy()
    return {
        "users": int(slots[s.USER_ID].nunique()),
        "mixes": int(per_mix.ngroups),
        "slots": len(slots),
        "mixes_per_user": per_mix.ngroups / slots[s.USER_ID].nunique(),
        "tracks_per_mix": len(slots) / per_mix.ngroups,
        "discovery_share": float(slots[s.DISCOVERY].mean()),
        "explore_share": float((slots[s.POLICY] == s.POLICY_EXPLORE).mean()),
        "global_genre_entropy": entropy(slots[s.GENRE]),
        "mean_mix_genre_entropy": float(per_mix[s.GENRE].agg(entropy).mean()),
        "user_genre_entropy": float(slots.groupby(s.USER_ID)[s.GENRE].agg(entropy).mean()),
        "coverage": slots[s.TRACK_ID].nunique() / catalog_size,
        # over the whole catalog: never-published tracks count as zero exposure
        "exposure_gini": gini(np.r_[exposures, np.zeros(max(0, catalog_size - len(exposures)))]),
    }


def engagement_metrics(events: pd.DataFrame, slots: pd.DataFrame | None = None) -> dict[str, float | None]:
    """Skip rates of the day's track starts, overall, by the policy that placed the track and — given the
    published slots the events came from — for discoveries vs familiar tracks (joined on mix_id, position)."""
    def rate(frame: pd.DataFrame) -> float | None:
        return float(frame[s.SKIPPED].mean()) if len(frame) else None  # None: no such events that day

    from_mix = events.loc[events[s.POLICY] != s.POLICY_ORGANIC]
    metrics = {
        "events": len(events),
        "skip_rate": rate(events),
        "skip_rate_exploit": rate(events.loc[events[s.POLICY] == s.POLICY_EXPLOIT]),
        "skip_rate_explore": rate(events.loc[events[s.POLICY] == s.POLICY_EXPLORE]),
        "skip_rate_organic": rate(events.loc[events[s.POLICY] == s.POLICY_ORGANIC]),
        "skip_rate_discovery": None,
        "skip_rate_familiar": None,
    }
    if slots is not None and len(slots) and len(from_mix):
        keys = slots[[s.MIX_ID, s.POSITION, s.DISCOVERY]].astype({s.MIX_ID: "string", s.POSITION: "int64"})
        joined = from_mix.astype({s.POSITION: "int64"}).merge(keys, on=[s.MIX_ID, s.POSITION], how="inner")
        metrics["skip_rate_discovery"] = rate(joined.loc[joined[s.DISCOVERY]])
        metrics["skip_rate_familiar"] = rate(joined.loc[~joined[s.DISCOVERY]])
    return metrics


def health_row(day: str, slots: pd.DataFrame, events: pd.DataFrame, catalog_size: int) -> dict:
    """One row of the monitor's time series: what was published and how listeners responded."""
    return {"date": day, **publication_metrics(slots, catalog_size), **engagement_metrics(events, slots)}


def baseline_days(day: str, weeks: int) -> list[str]:
    """The same weekday in each of the `weeks` previous weeks, most recent first."""
    start = date.fromisoformat(day)
    return [(start - timedelta(days=7 * k)).isoformat() for k in range(1, weeks + 1)]


def drift_alerts(today: dict, baseline: pd.DataFrame, config: MonitorConfig,
                 long_baseline: pd.DataFrame | None = None) -> list[str]:
    """Today's row vs the median of the baseline rows (previous weekly values); too few rows → no verdict.

    Entropies are also held against `long_baseline` (older weekly values, `monitor.long_baseline_weeks`): a
    slow narrowing drags the trailing median down with it and never looks like a drop against it.
    """
    if len(baseline) < config.min_baseline_weeks:
        return []
    alerts = []
    for metric in config.entropy_metrics:
        alert = _entropy_drop(today, metric, baseline, "baseline", config)
        if alert is None and long_baseline is not None and len(long_baseline):
            alert = _entropy_drop(today, metric, long_baseline, "long-horizon baseline", config)
        alerts += [alert] if alert else []
    base, skip = _median(baseline, SKIP_METRIC), today.get(SKIP_METRIC)
    if skip is not None and not np.isnan(base) and skip > base + config.skip_rise:
        alerts.append(f"{SKIP_METRIC} {skip:.3f} is {100 * (skip - base):.1f} pp above its baseline {base:.3f} (median "
                      f"of {len(baseline)} weekly values; threshold {100 * config.skip_rise:.0f} pp)")
    return alerts


def _entropy_drop(today: dict, metric: str, baseline: pd.DataFrame, name: str, config: MonitorConfig) -> str | None:
    base, value = _median(baseline, metric), today.get(metric)
    if value is None or not base > 0 or value >= (1 - config.entropy_drop) * base:
        return None
    return (f"{metric} {value:.3f} is {1 - value / base:.1%} below its {name} {base:.3f} (median of {len(baseline)} "
            f"weekly values; threshold {config.entropy_drop:.0%})")


def _median(frame: pd.DataFrame, metric: str) -> float:
    if metric not in frame:
        return float("nan")
    values = pd.to_numeric(frame[metric], errors="coerce").dropna()
    return float(values.median()) if len(values) else float("nan")


def metrics_path(settings: Settings, day: str) -> Path:
    return Layout(settings.home).monitoring / "metrics" / f"date={day}.json"


def store_metrics(settings: Settings, day: str, row: dict) -> str:
    """Write the day's health row (overwrites: idempotent by date)."""
    return str(atomic_write_json(row, metrics_path(settings, day)))


def record_day(settings: Settings, day: str, catalog_size: int) -> str:
    """Store the day's health row: the day's publication and the day's events (joined to the mixes they came
    from, whichever night published them)."""
    layout = Layout(settings.home)
    _, slots = read_publication(settings, day)
    events = read_raw_events(layout, [day])
    return store_metrics(settings, day, health_row(day, slots, events, catalog_size)
                         | _discovery_rates(settings, events))


def _discovery_rates(settings: Settings, events: pd.DataFrame) -> dict:
    """Discovery vs familiar skip rates against the publications the events' mixes came from."""
    mix_days = s.mix_days(events[s.MIX_ID].dropna().unique())
    published = []
    for mix_day in mix_days:
        try:
            published.append(read_publication(settings, mix_day)[1])
        except LookupError:
            continue  # a mix from a publication since removed: it still counts in the overall skip rate
    if not published:
        return {}
    rates = engagement_metrics(events, pd.concat(published, ignore_index=True))
    return {k: rates[k] for k in ("skip_rate_discovery", "skip_rate_familiar")}


def metrics_history(settings: Settings, before: str | None = None, days: int | None = None) -> pd.DataFrame:
    """Stored daily rows, oldest first (optionally only the `days` before `before`)."""
    files = sorted((Layout(settings.home).monitoring / "metrics").glob("date=*.json"))
    rows = [read_json(f) for f in files]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if before is not None:
        frame = frame.loc[frame["date"] < before]
    return frame.tail(days) if days else frame


def weekly_baseline(settings: Settings, day: str) -> pd.DataFrame:
    """Stored rows of the same weekday in the previous `monitor.baseline_weeks` weeks (those that exist)."""
    return _stored_rows(settings, baseline_days(day, settings.monitor.baseline_weeks))


def long_baseline(settings: Settings, day: str) -> pd.DataFrame:
    """Stored rows of the same weekday `baseline_weeks` + 1 to `long_baseline_weeks` weeks back (those that exist)."""
    config = settings.monitor
    return _stored_rows(settings, baseline_days(day, config.long_baseline_weeks)[config.baseline_weeks:])


def _stored_rows(settings: Settings, days: list[str]) -> pd.DataFrame:
    return pd.DataFrame([read_json(path) for d in days if (path := metrics_path(settings, d)).exists()])


def check_drift(settings: Settings, day: str) -> list[str]:
    """Alerts for the day against its trailing and long-horizon weekly baselines, written to the alert log."""
    today = read_json(metrics_path(settings, day))
    alerts = drift_alerts(today, weekly_baseline(settings, day), settings.monitor, long_baseline(settings, day))
    raise_alerts(settings, day, "monitor", alerts)
    return alerts


def log_metrics_to_mlflow(settings: Settings, day: str) -> str:
    """Log the day's health row to the monitor experiment (one run per day, found again on rerun); returns the
    run id. Steps are days since the epoch, so the MLflow UI charts each metric as a time series."""
    import mlflow

    from pipeline.core import registry
    row = read_json(metrics_path(settings, day))
    registry.client(settings)
    name = settings.monitor.mlflow_experiment
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(Path(settings.artifact_root) / name).as_uri())
    experiment = mlflow.set_experiment(name)
    existing = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`dailymix.date` = '{day}'",
                                  output_format="list")
    step = (date.fromisoformat(day) - date(1970, 1, 1)).days
    metrics = {k: float(v) for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    with mlflow.start_run(run_id=existing[0].info.run_id if existing else None, run_name=f"monitor-{day}") as run:
        mlflow.set_tag("dailymix.date", day)
        mlflow.log_metrics(metrics, step=step)
    return run.info.run_id


def _record_run_day(run: FlowRun) -> str:
    catalog = read_catalog(Layout(run.settings.home), columns=[s.TRACK_ID])
    return record_day(run.settings, run.day, len(catalog))


FLOW = Flow("dailymix_monitor", (
    Step("metrics", _record_run_day),
    Step("to_mlflow", lambda run: log_metrics_to_mlflow(run.settings, run.day), after=("metrics",)),
    Step("drift", lambda run: check_drift(run.settings, run.day), after=("metrics",)),
))
