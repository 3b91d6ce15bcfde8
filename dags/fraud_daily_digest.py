"""
### fraud_daily_digest

Shortly after midnight UTC, writes the previous day's scoring digest to
`reports/digest/<date>/`: volume, score and band distributions, the fraud rate among
labelled transactions, the precision of BLOCK and CHALLENGE against the analysts' labels,
the riskiest users (ids only, PII masked) and the model versions that served, as CSV files
and an `index.html` with the charts embedded.

Trigger it by hand with `{"date": "YYYY-MM-DD"}` to (re)write a given day, e.g. once late
labels have arrived. Logic: `jobs.digest`. Needs `DATABASE_URL` in the worker's
environment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Param, dag, task


@dag(
    dag_id="fraud_daily_digest",
    schedule="15 0 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={"date": Param(None, type=["null", "string"], format="date", description="UTC day")},
    tags=["fraudops", "feedback", "reporting"],
    doc_md=__doc__,
)
def fraud_daily_digest():
    @task
    def write_digest(*, params=None, dag_run=None) -> str:
        """The digest of `params.date`, or of the day before the run; returns its folder."""
        from datetime import date

        from fraudops.params import load_params
        from fraudops.settings import load_settings
        from jobs.common import project_path
        from jobs.digest import run_digest

        settings = load_settings()
        if not settings.database_url:
            raise RuntimeError("DATABASE_URL is not set in the worker's environment")
        if params.get("date"):
            day = date.fromisoformat(params["date"])
        else:  # the complete day before the run (manual runs may have no logical date)
            day = (dag_run.logical_date or dag_run.run_after).date() - timedelta(days=1)
        out_dir = project_path("reports/digest")
        digest_params = load_params(project_path("params.yaml"), "digest")
        return str(run_digest(settings.database_url, day, out_dir, digest_params))

    write_digest()


fraud_daily_digest()
