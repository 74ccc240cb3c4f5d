"""
### Daily Mix — ANN index (after each retrain)

| step | what it does | output |
|---|---|---|
| `embeddings` | takes the track embeddings of the `champion` model version (fitted with it, so ranker and index agree) | `indexes/embeddings/<hash>.npz` |
| `build` | builds a seeded Annoy index (angular); versioned by content hash, so an unchanged champion reuses its index | `indexes/<version>/` |
| `recall_gate` | measures recall@1000 against exact search on a seeded sample of user vectors; fails below the floor | `build.json` |
| `publish` | records the index as the one serving that model version; logs it to MLflow | `indexes/by-model/<v>.json`, asset `dailymix_index` |

**Runbook.** *recall_gate failed*: the previous index keeps serving (nothing was published). Raise
`retrieval.n_trees` in `settings.json` and clear the task.
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, INDEX, RANKER, START_DATE, announce, run_day, settings
from airflow.sdk import dag, task

RECALL_FLOOR = 0.90


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
        from pipeline.indexing import export_embeddings

        return export_embeddings(settings())

    @task
    def build(exported: dict) -> dict:
        from pipeline.indexing import build_index

        return build_index(settings(), exported["embeddings_path"])

    @task
    def recall_gate(built: dict) -> float:
        from pipeline.indexing import measure_recall

        recall = measure_recall(settings(), built["index_version"])
        if recall < RECALL_FLOOR:
            raise ValueError(f"index {built['index_version']}: recall@1000 {recall:.3f} < floor {RECALL_FLOOR}")
        return recall

    @task(outlets=[INDEX])
    def publish(built: dict, exported: dict, recall: float) -> dict:
        from pipeline.indexing import publish_index

        record = publish_index(settings(), built["index_version"], exported["model_version"])
        announce(INDEX, run_day(), index_version=built["index_version"])
        return record

    exported = embeddings()
    built = build(exported)
    publish(built, exported, recall_gate(built))


dailymix_index()
