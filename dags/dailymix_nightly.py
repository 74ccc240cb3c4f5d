"""
### Daily Mix — nightly mixes (after each day's features)

| step | what it does | output |
|---|---|---|
| `plan` | pins the champion model, its index and the feature version; splits active users into shards | `nightly/date=D/plan.json` |
| `skew_gate` | validates tonight's online features (users, tracks) against the champion's Great Expectations suites, generated from its training data; fails on drift or features older than 24 h | `validation/results/date=D.json`, Data Docs `validation/gx/uncommitted/data_docs/local_site/index.html`, alert `monitoring/alerts/date=D/skew_gate.json` |
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

from _dailymix import DEFAULT_ARGS, FEATURES, MIXES, START_DATE, announce, run_day, settings
from airflow.sdk import dag, get_current_context, task


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
        from pipeline.nightly.shard import plan as plan_night
        from pipeline.nightly.shard import shard_count

        path = plan_night(settings(), run_day())
        return [{"plan_path": path, "shard": shard} for shard in range(shard_count(path))]

    @task
    def skew_gate(shards: list[dict]) -> list[dict]:
        from pipeline.features.skew import run_gate

        run_gate(settings(), shards[0]["plan_path"])  # raises, listing every drifted feature, on skew
        return shards

    @task(map_index_template="shard {{ task.op_kwargs['shard'] }}")
    def score(plan_path: str, shard: int) -> dict:
        from pipeline.nightly.shard import score_shard

        return {"plan_path": plan_path, "shard_path": score_shard(settings(), plan_path, shard)}

    @task(outlets=[MIXES])
    def publish(scored: list[dict]) -> dict:
        from pipeline.publish.files import publish as publish_mixes

        scored = list(scored)
        manifest = publish_mixes(settings(), scored[0]["plan_path"], [s["shard_path"] for s in scored],
                                 get_current_context()["run_id"])
        announce(MIXES, manifest["date"], content_hash=manifest["content_hash"])
        return manifest

    publish(score.expand_kwargs(skew_gate(plan())))


dailymix_nightly()
