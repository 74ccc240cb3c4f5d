"""
### Daily Mix — retrain the ranker (weekly)

The steps are the retrain flow (`pipeline.train.retrain.FLOW`), the same the closed-loop simulation runs.

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

from _dailymix import DEFAULT_ARGS, RANKER, START_DATE, announce, run_day, run_step
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
        from pipeline.train.retrain import FLOW

        return run_step(FLOW)

    @task
    def fit_and_register(training_data: str) -> dict:
        from pipeline.train.retrain import FLOW

        return run_step(FLOW, training_data=training_data)

    @task(outlets=[RANKER])
    def promote(training_data: str, fit_and_register: dict) -> dict:
        from pipeline.train.retrain import FLOW

        decision = run_step(FLOW, training_data=training_data, fit_and_register=fit_and_register)
        announce(RANKER, run_day(), version=fit_and_register["version"], promoted=decision["promoted"])
        return decision

    directory = training_data()
    promote(training_data=directory, fit_and_register=fit_and_register(directory))


dailymix_retrain()
