"""What the DAG files need at parse time, without a database driver: the Airflow assets the
jobs emit, and how a job finds the project it runs in."""

from __future__ import annotations

import os
from pathlib import Path

FEEDBACK_ASSET_URI = "fraudops://feedback/labels"
FEEDBACK_ASSET_NAME = "feedback_labels"
DRIFT_ASSET_URI = "fraudops://monitoring/drift"
DRIFT_ASSET_NAME = "traffic_drift"
# The fraud_training task environment variable naming what started the run: the asset
# events' URIs, or the run type (scheduled, manual) when no asset did.
TRIGGER_ENV = "FRAUDOPS_TRAINING_TRIGGER"
# Airflow workers start in no particular directory: relative paths (params.yaml, the model
# directory, reports/) are taken from the project, the checkout this package lives in,
# unless FRAUDOPS_PROJECT_DIR names another (a test's temporary project, a deployment).
PROJECT_DIR_ENV = "FRAUDOPS_PROJECT_DIR"


def project_path(path: str | Path) -> Path:
    """`path` made absolute against the project directory (absolute paths stay as they are)."""
    root = os.environ.get(PROJECT_DIR_ENV) or Path(__file__).resolve().parents[1]
    return Path(root) / path
