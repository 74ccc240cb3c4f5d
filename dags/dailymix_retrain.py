"""
### Daily Mix — retrain the ranker (weekly)

| step | what it does | output |
|---|---|---|
| `training_data` | fits ALS track/user embeddings on the window; builds the point-in-time training set (Feast historical retrieval: features as of the start of each event's day), label = played without skip, weight = clipped inverse propensity | `models/training/date=D/` |
| `fit_and_register` | fits a gradient-boosted ranker (IPS-weighted unless `training.use_ips` is off) on all but the last days; AUC, log loss, NDCG@10 on them; IPS/SNIPS/DR off-policy estimates with bootstrap intervals on the holdout days' exploration logs; logs params, metrics, plots, OPE estimates, skew suites, embeddings and the model (signature, input example) to experiment `dailymix-ranker`; registers a new version with lineage tags | MLflow run + model version |
| `promote` | evaluates the current champion on the same exploration logs; alias `champion` moves to the new version unless its SNIPS estimate is worse by more than `promotion.snips_tolerance`, else alias `challenger` (too few exploration events: holdout AUC decides, and the reason says so) | alias, tags `dailymix.promotion(_reason)`, asset `dailymix_ranker` |

**Inputs**: the raw event log (`raw/events/`, last `training.window_days`), the Feast offline snapshots, the catalog. **Outputs**: a registered `dailymix-ranker` version, alias `champion`, asset `dailymix_ranker` (triggers `dailymix_index`).

**Runbook.** *Promotion rejected*: the version is registered with alias `challenger` and tagged
`dailymix.promotion=rejected` and `dailymix.promotion_reason` (both SNIPS estimates with intervals); the
champion keeps serving. *Roll back*: `dailymix rollback --version V` (or MLflow UI → Models →
`dailymix-ranker` → version V → add alias `champion`), then trigger `dailymix_index` (its index is reused if
it exists: same content hash).
"""

from __future__ import annotations

from _dailymix import DEFAULT_ARGS, RANKER, START_DATE, announce, run_day, settings
from airflow.sdk import dag, task


@dag(
    dag_id="dailymix_retrain",
    schedule="@weekly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dailymix", "training", "mlflow"],
    doc_md=__doc__,
)
def dailymix_retrain():
    @task
    def training_data() -> str:
        from pipeline.train.retrain import prepare_training_data

        return prepare_training_data(settings(), run_day())

    @task
    def fit_and_register(directory: str) -> dict:
        from pipeline.train.retrain import train_and_register

        return train_and_register(settings(), run_day(), directory)

    @task(outlets=[RANKER])
    def promote(directory: str, candidate: dict) -> dict:
        from pipeline.train.retrain import promote_if_better

        decision = promote_if_better(settings(), directory, candidate)
        announce(RANKER, run_day(), version=candidate["version"], promoted=decision["promoted"])
        return decision

    directory = training_data()
    promote(directory, fit_and_register(directory))


dailymix_retrain()
