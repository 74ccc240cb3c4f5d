"""
### Daily Mix — ANN index (after each retrain)

The steps are the index flow (`pipeline.candidates.index.FLOW`), the same the closed-loop simulation runs.

| step | what it does | output |
|---|---|---|
| `embeddings` | takes the track embeddings of the `champion` model version (fitted with it, so ranker and index agree) | `indexes/embeddings/<hash>.npz` |
| `build` | builds a seeded index with the configured backend (`retrieval.backend`: `annoy` default, memory-mapped; or `voyager`). Annoy trees are doubled from `retrieval.n_trees` (Voyager's query depth `ef` from 1000) until recall@1000 on a seeded sample of the nightly's taste-cluster query vectors reaches `retrieval.target_recall` (0.95), up to `retrieval.max_trees` / `retrieval.voyager_max_ef`. Versioned by content hash (embeddings, knobs, seed, queries), so an unchanged champion reuses its index | `indexes/<version>/` (`build.json`: trees, build time, size, tuning steps) |
| `recall_gate` | measures recall@1000 against exact search on the same queries; fails below `retrieval.min_recall` (0.90), without retries (the build will not change), logs the rejected build to MLflow and sends the alert (see `dailymix_monitor`'s **Alerts**) | `build.json`, alert `monitoring/alerts/date=D/recall_gate.json` |
| `publish` | records the index as the one serving that model version; logs recall, build time, size and trees to MLflow | `indexes/by-model/<v>.json`, asset `dailymix_index` |

**Inputs**: asset `dailymix_ranker` (a promoted `champion`; triggers this DAG) and its embeddings in MLflow. **Outputs**: `indexes/<version>/`, `indexes/by-model/<v>.json`, asset `dailymix_index` (read by `dailymix_nightly`'s plan).

**Runbook.** *recall_gate failed*: nothing was published, so the previous index keeps serving its model version
(the nightly run pins the index through `indexes/by-model/<v>.json`). The error names the backend, its effort
(trees / ef) and the recall. Raise `retrieval.max_trees` (annoy) or `retrieval.voyager_max_ef` (voyager) in
`settings.json` — or lower `retrieval.min_recall` only if you accept losing neighbours — then clear `build`.
The MLflow run tagged `dailymix.index_status=rejected` has the numbers.
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, INDEX, RANKER, START_DATE, announce, gate_task, run_day, run_step
from airflow.sdk import dag, task


@dag(
    dag_id="dailymix_index",
    schedule=[RANKER],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dailymix", "retrieval"],
    doc_md=__doc__,
)
def dailymix_index():
    @task
    def embeddings() -> dict:
        from pipeline.candidates.index import FLOW

        return run_step(FLOW)

    @task
    def build(embeddings: dict) -> dict:
        from pipeline.candidates.index import FLOW

        return run_step(FLOW, embeddings=embeddings)

    @gate_task("recall_gate")
    def recall_gate(build: dict) -> float:
        from pipeline.candidates.index import FLOW

        return run_step(FLOW, build=build)

    @task(outlets=[INDEX])
    def publish(embeddings: dict, build: dict, recall_gate: float) -> dict:
        from pipeline.candidates.index import FLOW

        record = run_step(FLOW, embeddings=embeddings, build=build, recall_gate=recall_gate)
        announce(INDEX, run_day(), index_version=record["index_version"])
        return record

    exported = embeddings()
    built = build(exported)
    publish(embeddings=exported, build=built, recall_gate=recall_gate(built))


dailymix_index()
