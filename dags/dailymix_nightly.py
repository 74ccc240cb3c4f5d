"""
### Daily Mix — nightly mixes (after each day's features)

The steps are the nightly flow (`pipeline.nightly.flow.nightly_flow`), the same the closed-loop simulation runs
(without the skew gate), publishing with `pipeline.publish.files.publish`.

| step | what it does | output |
|---|---|---|
| `plan` | pins the champion model, its index and the feature version; splits active users into shards | `nightly/date=D/plan.json` |
| `skew_gate` | validates tonight's online features (users, tracks) against the champion's Great Expectations suites, generated from its training data; fails on drift or features older than 24 h, without retries (the data will not change), and sends the alert (see `dailymix_monitor`'s **Alerts**) | `validation/results/date=D.json`, Data Docs `validation/gx/uncommitted/data_docs/local_site/index.html`, alert `monitoring/alerts/date=D/skew_gate.json` |
| `score` (mapped, one per shard) | per user: taste clusters → Annoy top-1000 per cluster → one batched ranker call → re-ranking (discovery quota, artist cap, exploration with propensities) | `nightly/date=D/shard-K.parquet` |
| `publish` | checks every mix against the rules, writes the content-addressed mixes file and swaps the date's manifest atomically | `published/date=D/`, asset `dailymix_mixes` |

**Inputs**: asset `dailymix_features` (the day's online features; triggers this DAG), the `champion` model in MLflow and its index (`indexes/by-model/<v>.json`). **Outputs**: `published/date=D/` (mixes with lineage), asset `dailymix_mixes` (triggers `dailymix_monitor`). The mixes show in the Airflow UI under **Daily Mix**.

**Runbook.** *skew_gate failed*: nothing was scored or published; yesterday's mixes stay current. The log
lists each failed expectation with observed vs expected values; open the Data Docs for the full report.
A freshness failure means `dailymix_features` has not run for the day. A drifted feature usually means an
upstream change (a unit, a broken join): fix the data, rerun `dailymix_features` for the day, clear the gate.
`dailymix validate --date D` runs the same gate from the command line. *publish failed with rule violations*: nothing was published; yesterday's mixes stay current.
*A shard failed*: clear just that mapped task; shards are deterministic and idempotent. *Backfill a date*:
`airflow dags test dailymix_nightly YYYY-MM-DD` rewrites that date only (the latest pointer never moves back).
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, FEATURES, MIXES, START_DATE, announce, gate_task, run_step
from airflow.sdk import dag, task


def nightly():
    """The nightly flow publishing to the configured store (built when a task runs: no domain imports at parse)."""
    from pipeline.nightly.flow import nightly_flow
    from pipeline.publish.files import publish

    return nightly_flow(publish)


@dag(
    dag_id="dailymix_nightly",
    schedule=[FEATURES],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dailymix", "serving"],
    doc_md=__doc__,
)
def dailymix_nightly():
    @task
    def plan() -> list[dict]:
        return run_step(nightly())

    @gate_task("skew_gate")
    def skew_gate(plan: list[dict]) -> dict:
        return run_step(nightly(), plan=plan)  # raises, listing every drifted feature, on skew

    @task(map_index_template="shard {{ task.op_kwargs['item']['shard'] }}")
    def score(item: dict) -> str:
        return run_step(nightly(), item=item)

    @task(outlets=[MIXES])
    def publish(plan: list[dict], score: list[str]) -> dict:
        manifest = run_step(nightly(), plan=plan, score=list(score))
        announce(MIXES, manifest["date"], content_hash=manifest["content_hash"])
        return manifest

    shards = plan()
    scored = score.expand(item=shards)
    skew_gate(shards) >> scored
    publish(plan=shards, score=scored)


dailymix_nightly()
