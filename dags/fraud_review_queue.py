"""
### fraud_review_queue

Builds the analysts' review queue, as often as `queue.schedule` (params.yaml) says: each run
rebuilds the queue of today and of yesterday (UTC) from `scored_transactions` with the
active-learning policy of params.yaml's `queue` section: the budget k, mostly the highest
scores, an exploration share of scores nearest a band threshold and a random sample of
ALLOW. Items analysts have labelled or claimed stay in place; the console's Queue screen
lists the queue, each item with its reason, and a label given from it is stored with it.

Trigger it by hand with `{"date": "YYYY-MM-DD"}` to (re)build one given day. Logic:
`jobs.review_queue`. Needs `DATABASE_URL` in the worker's environment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task

from fraudops.params import load_params
from jobs.common import project_path

QUEUE_PARAMS = project_path("params.yaml")


@dag(
    dag_id="fraud_review_queue",
    schedule=load_params(QUEUE_PARAMS, "queue")["schedule"],
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={"date": Param(None, type=["null", "string"], format="date", description="UTC day")},
    tags=["fraudops", "feedback", "review-queue"],
    doc_md=__doc__,
)
def fraud_review_queue():
    @task
    def build_queue(*, params=None, dag_run=None) -> dict:
        """The queue of `params.date`, or of the run's yesterday and today; returns the
        items per reason of each day built."""
        from datetime import date

        from fraudops.settings import load_settings
        from jobs.review_queue import days_to_build, run_queue

        settings = load_settings()
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set in the worker's environment")
        if params.get("date"):
            days = [date.fromisoformat(params["date"])]
        else:  # manual runs may have no logical date
            days = days_to_build(dag_run.logical_date or dag_run.run_after)
        return run_queue(settings.database_url, days, load_params(QUEUE_PARAMS, "queue"))

    build_queue()


fraud_review_queue()
