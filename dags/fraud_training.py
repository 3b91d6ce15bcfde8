"""
### fraud_training

The fraudops training pipeline: one task per stage of `dvc.yaml` (reference,
fit_synthesizer, generate, validate, collect_feedback, featurize, train, evaluate, export,
promote), with the same edges. The tasks and edges are read from `dvc.yaml` when this file
is parsed (`fraudops.pipeline_graph`), so the pipeline is defined once.

Each task runs `dvc repro --single-item <stage>` in the project directory
(`FRAUDOPS_PROJECT_DIR`, default: the parent of the dags folder): DVC skips a stage whose
code, inputs and params are unchanged, runs it otherwise, and records it in `dvc.lock`. The
stage's own output (and DVC's verdict) is in the task log. `collect_feedback` reads live
labels from Postgres, so its task always refreshes it (`--force`); the stages after it
re-run only if the labels actually changed.

**Schedule**: daily at 02:00 UTC, or as soon as `fraud_label_watch` announces enough new
analyst labels (asset `fraudops://feedback/labels`), or `fraud_drift_watch` raises its
alarm on live traffic (asset `fraudops://monitoring/drift`). Each task's environment says
which (`FRAUDOPS_TRAINING_TRIGGER`), and the MLflow pipeline run is tagged with it.

**One task at a time** (`max_active_tasks=1`): DVC holds a lock on the repository while a
stage runs, so two stages of one repository cannot run side by side. No pool is needed
since this DAG is the only writer of the repository, and `max_active_runs=1` keeps two runs
apart. A failed validation stops the run (no retries for `validate`: the batch is bad);
other stages retry twice. A rejected candidate is not a failure: `promote` succeeds and
`reports/promotion.json` says why.

Needs in the worker's environment: `MLFLOW_TRACKING_URI`, and `DATABASE_URL` for labels and
the audit log.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from fraudops import pipeline_graph
from jobs.common import (
    DRIFT_ASSET_NAME,
    DRIFT_ASSET_URI,
    FEEDBACK_ASSET_NAME,
    FEEDBACK_ASSET_URI,
    TRIGGER_ENV,
)

PROJECT_DIR = pipeline_graph.project_dir(__file__)
STAGES = pipeline_graph.load_stages(PROJECT_DIR)
FEEDBACK_LABELS = Asset(uri=FEEDBACK_ASSET_URI, name=FEEDBACK_ASSET_NAME)
DRIFT = Asset(uri=DRIFT_ASSET_URI, name=DRIFT_ASSET_NAME)
# What started this run, for the MLflow pipeline run's tag: the URIs of the asset events
# that triggered it, else the run type (scheduled, manual, backfill).
TRIGGER = (
    "{{ (triggering_asset_events | map(attribute='uri') | sort | join(',')) or dag_run.run_type }}"
)


@dag(
    dag_id="fraud_training",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
        assets=FEEDBACK_LABELS | DRIFT,
    ),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["fraudops", "training", "dvc"],
    doc_md=__doc__,
)
def fraud_training():
    @task.bash(cwd=str(PROJECT_DIR), env={TRIGGER_ENV: TRIGGER}, append_env=True)
    def stage(command: str) -> str:
        return command

    tasks = {}
    for item in STAGES:
        retries = {} if item.retries is None else {"retries": item.retries}
        tasks[item.name] = stage.override(task_id=item.name, doc_md=f"`{item.cmd}`", **retries)(
            pipeline_graph.repro_command(item, Path(sys.executable).parent)
        )
    for name, upstream in pipeline_graph.upstream(STAGES).items():
        tasks[name].set_upstream([tasks[u] for u in upstream])


fraud_training()
