"""
### Daily Mix — features (daily)

Turns the day's landed play events into features for training and serving.

| step | what it does | output |
|---|---|---|
| `ingest` | validates `landing/events/date=D/events.parquet` row by row; bad rows go to `quarantine/events/date=D/` with a reason each | `raw/events/date=D/` |
| `offline_store` | computes the day's snapshot of every Feast feature view (user profile, track stats, last-10 interactions) from the trailing window | `features/offline/<view>/date=D/` |
| `online_store` | materialises that snapshot into the Feast online store (SQLite) | asset `dailymix_features` |

**Inputs**: the day's event file (`landing/events/date=D/`), the catalog. **Outputs**: `raw/events/date=D/`, `quarantine/events/date=D/`, the Feast offline snapshots and online store, asset `dailymix_features` (triggers `dailymix_nightly`).

**Runbook.** *ingest failed with "quarantined, above the 1.0% threshold"*: the message names the file,
the most common reasons and the first row of each. Inspect `quarantine/events/date=D/*.parquet`, fix the
producer or the file, and clear the task: nothing was written to the raw store for that file, so a rerun
is safe. Reruns overwrite the day's partitions; backfill a range with `airflow backfill create --dag-id dailymix_features --from-date D1 --to-date D2`.
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, FEATURES, START_DATE, announce, run_day, settings
from airflow.sdk import dag, task


@dag(
    dag_id="dailymix_features",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dailymix", "features"],
    doc_md=__doc__,
)
def dailymix_features():
    @task
    def ingest() -> dict:
        from pipeline.features.daily import ingest_day

        return ingest_day(settings(), run_day())

    @task
    def offline_store(report: dict) -> dict:
        from pipeline.features.daily import build_offline_features

        return build_offline_features(settings(), report["day"])

    @task(outlets=[FEATURES])
    def online_store(report: dict, offline_paths: dict) -> str:
        from pipeline.features.daily import materialize_online

        version = materialize_online(settings(), report["day"])
        announce(FEATURES, report["day"], feature_version=version)
        return version

    report = ingest()
    online_store(report, offline_store(report))


dailymix_features()
