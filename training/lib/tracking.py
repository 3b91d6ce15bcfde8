"""Small MLflow helpers shared by train, evaluate and promote, so every stage names
experiments, lineage tags and metrics the same way.

The tracking URI is passed in (main() reads it from fraudops.settings); nothing here reads
the environment or talks to a server at import time."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow

# Lineage tags every training run carries (DESIGN section 4: run -> data hash -> commit).
TAG_DATA_HASH = "data_hash"
TAG_GIT_COMMIT = "git_commit"
TAG_ROLE = "fraudops.role"  # "candidate" (the Keras model) or "baseline"


def use_experiment(tracking_uri: str, experiment: str) -> str:
    """Point mlflow at the server and the pipeline's experiment; return its id."""
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.set_experiment(experiment).experiment_id


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the enclosing git repository, or None outside one."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def files_hash(paths: Iterable[Path]) -> str:
    """md5 over the names and bytes of the given files: the data hash a run is tagged with."""
    digest = hashlib.md5()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params (`a.b`); MLflow stores params as strings."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def log_to_run(
    run_id: str,
    metrics: dict[str, float] | None = None,
    artifacts: Iterable[Path] = (),
    tags: dict[str, str] | None = None,
) -> None:
    """Add metrics, artifacts and tags to an existing (finished) run, e.g. the candidate's
    held-out metrics from evaluate, or the promotion decision from promote."""
    with mlflow.start_run(run_id=run_id):
        if metrics:
            mlflow.log_metrics(metrics)
        if tags:
            mlflow.set_tags(tags)
        for path in artifacts:
            mlflow.log_artifact(str(path))
