"""Shared wiring for the Daily Mix DAGs: assets, default arguments, the run's day, running a flow's step, gates.

Kept light: only Airflow's SDK and the notifier plugin are imported here. Domain code is imported inside tasks.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, get_current_context, task
from dailymix_notifiers import DailyMixAlertNotifier

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
# The retry delay is a deployment knob (tests shorten it); retries themselves are fixed.
RETRY_DELAY = timedelta(seconds=float(os.environ.get("DAILYMIX_RETRY_DELAY_SECONDS", "60")))
DEFAULT_ARGS = {"owner": "dailymix", "retries": 2, "retry_delay": RETRY_DELAY}

# What each DAG produces and the next one consumes. `extra["date"]` names the day produced.
FEATURES = Asset(name="dailymix_features", uri="dailymix://features/online")
RANKER = Asset(name="dailymix_ranker", uri="dailymix://models/ranker@champion")
INDEX = Asset(name="dailymix_index", uri="dailymix://indexes/tracks")
MIXES = Asset(name="dailymix_mixes", uri="dailymix://published/mixes")


def run_day(context=None) -> str:
    """The ISO day this run is for: its logical date, or the day carried by the asset event that triggered it.

    Inside a task the context is found; callbacks (notifiers) pass theirs.
    """
    context = context if context is not None else get_current_context()
    if context.get("logical_date") is not None:
        return context["logical_date"].strftime("%Y-%m-%d")
    conf = context["dag_run"].conf or {}
    if "date" in conf:
        return str(conf["date"])
    days = [event.extra["date"] for events in context["triggering_asset_events"].values() for event in events
            if "date" in (event.extra or {})]
    if not days:
        raise ValueError("this run has no logical date, no conf['date'] and no triggering asset event with a date")
    return max(days)


def announce(asset: Asset, day: str, **extra) -> None:
    """Attach the produced day (and any small facts) to the asset event this task emits."""
    get_current_context()["outlet_events"][asset].extra = {"date": day, **extra}


def settings():
    from pipeline.core.config import load_settings

    return load_settings()


def run_step(flow, **upstream: Any) -> Any:
    """Run the step of `flow` (a `pipeline.core.flow.Flow`) named like the current task, for this run's day, id and
    params, with the results of its upstream tasks by step name (and `item=` for one item of a mapped step)."""
    context = get_current_context()
    return flow.run_step(context["ti"].task_id, settings(), run_day(context), run_id=context["run_id"],
                         params=dict(context["params"]), **upstream)


def gate_task(alert_source: str, **task_args):
    """`@task` for a check (skew gate, recall gate, drift): its failure is deterministic, so it is not retried, and
    the alerts it stored for the day go out through `DailyMixAlertNotifier` when it fails."""
    return task(retries=0, on_failure_callback=DailyMixAlertNotifier(source=alert_source, day_of_run=run_day),
                **task_args)
