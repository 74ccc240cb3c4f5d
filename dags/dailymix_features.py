"""
### Daily Mix — features (daily)

Turns the day's landed play events into features for training and serving. The steps are the features flow
(`pipeline.features.daily.FLOW`), the same the closed-loop simulation runs.

| step | what it does | output |
|---|---|---|
| `ingest` | validates `landing/events/date=D/events.parquet` row by row; bad rows go to `quarantine/events/date=D/` with a reason each | `raw/events/date=D/` |
| `offline_store` | computes the day's snapshot of every Feast feature view (user profile, track stats, last-10 interactions) from the trailing window | `features/offline/<view>/date=D/` |
| `online_store` | materialises that snapshot into the Feast online store (SQLite) | asset `dailymix_features` |

**Params.** `from_date` (default none: the run's own day only): a run covers every landed day from that date
through its own, in order: each is ingested and gets its offline snapshot, and the online store serves the run's
day. `airflow dags test dailymix_features D2 -c '{"from_date": "D1"}'` loads a landed history in one run
(`dailymix demo` does). Each day's outputs are keyed by that day, so reruns overwrite them.

**Inputs**: the day's event file (`landing/events/date=D/`), the catalog. **Outputs**: `raw/events/date=D/`, `quarantine/events/date=D/`, the Feast offline snapshots and online store, asset `dailymix_features` (triggers `dailymix_nightly`).

**Runbook.** *ingest failed with "quarantined, above the 1.0% threshold"*: the message names the file,
the most common reasons and the first row of each. Inspect `quarantine/events/date=D/*.parquet`, fix the
producer or the file, and clear the task: nothing was written to the raw store for that file, so a rerun
is safe. Reruns overwrite the day's partitions; backfill a range with `airflow backfill create --dag-id dailymix_features --from-date D1 --to-date D2`.
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, FEATURES, START_DATE, announce, run_day, run_step
from airflow.sdk import Param, dag, task


@dag(
    dag_id="dailymix_features",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dailymix", "features"],
    doc_md=__doc__,
    params={"from_date": Param(None, type=["null", "string"], format="date",
                               description="Also cover every landed day from this date (YYYY-MM-DD) through the run's")},
)
def dailymix_features():
    @task
    def ingest() -> list[dict]:
        from pipeline.features.daily import FLOW

        return run_step(FLOW)

    @task
    def offline_store(ingest: list[dict]) -> dict:
        from pipeline.features.daily import FLOW

        return run_step(FLOW, ingest=ingest)

    @task(outlets=[FEATURES])
    def online_store(offline_store: dict) -> str:
        from pipeline.features.daily import FLOW

        version = run_step(FLOW, offline_store=offline_store)
        announce(FEATURES, run_day(), feature_version=version)
        return version

    online_store(offline_store(ingest()))


dailymix_features()
