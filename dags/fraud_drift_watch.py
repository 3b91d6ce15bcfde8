"""
### fraud_drift_watch

Every hour, holds the last window of live scored traffic (`monitoring.window_minutes` of
`scored_transactions`, features recomputed with the one batch transform) to the served
champion's training reference (`drift_reference.json` beside its model.json): PSI per
feature and per segment (type mix, each type's amounts), KS / Wasserstein / Jensen-Shannon,
the score distribution and the band mix, label precision and recall where labels exist,
and the online-vs-batch skew of the scorer's sampled feature vectors.

Each window leaves a JSON and an HTML report and the Prometheus textfile under
`monitoring.report_dir`, and a `drift_reports` row. After `monitoring.consecutive_windows`
drifted windows in a row, `announce_drift` emits the asset `fraudops://monitoring/drift`
(the window's summary as the event's extra) and `fraud_training`, scheduled on it, starts;
otherwise that task is skipped.

Logic: `jobs.drift_watch`. Needs `DATABASE_URL` in the worker's environment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from jobs.common import DRIFT_ASSET_NAME, DRIFT_ASSET_URI

DRIFT = Asset(uri=DRIFT_ASSET_URI, name=DRIFT_ASSET_NAME)


@dag(
    dag_id="fraud_drift_watch",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["fraudops", "monitoring"],
    doc_md=__doc__,
)
def fraud_drift_watch():
    @task
    def watch_window(data_interval_end=None) -> dict:
        """Analyse, store and report the window ending at this run's interval end."""
        from fraudops.params import load_params
        from fraudops.settings import load_settings
        from jobs import drift_watch
        from jobs.common import project_path

        settings = load_settings()
        params = load_params(project_path("params.yaml"), "monitoring")
        end = data_interval_end or datetime.now(UTC)
        return drift_watch.watch_window(
            settings.database_url or settings.local_database_url(),
            project_path(settings.model_dir),
            end,
            params,
            project_path(params["report_dir"]),
        )

    @task(outlets=[DRIFT])
    def announce_drift(summary: dict, *, outlet_events=None) -> dict:
        """Emit the drift asset when this window completed the run of drifted windows."""
        if not summary["alarm"]:
            raise AirflowSkipException(
                f"no alarm: {summary['consecutive']} drifted window(s) in a row"
            )
        outlet_events[DRIFT].extra = summary
        return summary

    announce_drift(watch_window())


fraud_drift_watch()
