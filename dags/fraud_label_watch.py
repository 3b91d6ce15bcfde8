"""
### fraud_label_watch

Every five minutes, counts the analysts' labels given since the last training run learned
from them (or since the last time this DAG announced some). When there are at least
`label_watch.min_new_labels` (params.yaml), it emits the asset
`fraudops://feedback/labels`, with the count and the labels' time window as the event's
extra; the `fraud_training` DAG is scheduled on that asset (or its daily cron), so each
training run shows which event started it. Below the threshold the task is skipped and no
event is emitted.

Logic: `jobs.label_watch`. Needs `DATABASE_URL` in the worker's environment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from jobs.common import FEEDBACK_ASSET_NAME, FEEDBACK_ASSET_URI

FEEDBACK_LABELS = Asset(uri=FEEDBACK_ASSET_URI, name=FEEDBACK_ASSET_NAME)


@dag(
    dag_id="fraud_label_watch",
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["fraudops", "feedback"],
    doc_md=__doc__,
)
def fraud_label_watch():
    @task(inlets=[FEEDBACK_LABELS], outlets=[FEEDBACK_LABELS])
    def announce_new_labels(*, inlet_events=None, outlet_events=None) -> dict:
        """Emit the asset (with count and window as extra) when enough labels are new."""
        from fraudops.params import load_params
        from fraudops.settings import load_settings
        from jobs.common import project_path
        from jobs.label_watch import check_new_labels

        settings = load_settings()
        params = load_params(project_path("params.yaml"), "label_watch")
        last = list(inlet_events[FEEDBACK_LABELS].ascending(False).limit(1))
        extra = check_new_labels(
            settings.database_url,
            project_path(settings.model_dir),
            last[0].extra if last else None,
            int(params["min_new_labels"]),
        )
        if extra is None:
            raise AirflowSkipException("not enough new labels yet")
        outlet_events[FEEDBACK_LABELS].extra = extra
        return extra

    announce_new_labels()


fraud_label_watch()
