"""The MLflow model registry side of promote: every candidate becomes a version of the
registered model, and each version is an MLflow pyfunc model (fraudops.mlflow_model)
wrapping a model directory byte for byte.

A version's number is part of what the scorer serves (`v<N>/model.json` names it), so a
version is made in two steps: `register` creates an empty logged model and the version
that points at it (this yields N), and `fill` stores the model directory in it once that
directory is final: the published `v<N>` for a promotion, the export for a rejection."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import fraudops

log = logging.getLogger("fraudops.promote")

PACKAGE_DIR = Path(fraudops.__file__).parent  # shipped with each model: its code
ENTRY_FILE = PACKAGE_DIR / "mlflow_entry.py"

TAG_SHA = "tflite_sha256"
LOGGED_MODEL_SCHEME = "models:/"  # a version's source: the logged model holding it
# The light serving install is all the pyfunc needs (MLflow adds itself); no TensorFlow.
REQUIREMENTS = ("ai-edge-litert", "numpy", "pandas")


@dataclass(frozen=True)
class Registered:
    version: str
    model_id: str


def client_for(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name, description="fraudops fraud scorer (TFLite)")
        except MlflowException as race:  # another promote created it meanwhile
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def lineage_tags(spec: dict[str, Any], sha: str) -> dict[str, str]:
    return {
        TAG_SHA: sha,
        "data_hash": str(spec["data_hash"]),
        "git_commit": str(spec.get("git_commit")),
        "validation": json.dumps(spec.get("validation", {}), sort_keys=True),
    }


def register(client, name: str, spec: dict[str, Any], sha: str) -> Registered:
    """The registered version of this export, made once: a retried promote finds the
    version it already made (same TFLite bytes, same run) instead of a duplicate."""
    run_id = spec["mlflow_run_id"]
    ensure_registered_model(client, name)
    for mv in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if mv.tags.get(TAG_SHA) == sha and mv.source.startswith(LOGGED_MODEL_SCHEME):
            log.info("export already registered as %s version %s", name, mv.version)
            return Registered(str(mv.version), mv.source.removeprefix(LOGGED_MODEL_SCHEME))
    tags = lineage_tags(spec, sha)
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags=tags)
    source = f"{LOGGED_MODEL_SCHEME}{logged.model_id}"
    mv = client.create_model_version(
        name, source, run_id=run_id, tags=tags, model_id=logged.model_id
    )
    log.info("registered %s version %s from run %s", name, mv.version, run_id)
    return Registered(str(mv.version), logged.model_id)


def requirements() -> list[str]:
    return [f"{name}=={installed_version(name)}" for name in REQUIREMENTS]


def save_pyfunc(model_dir: Path, out: Path, run_id: str | None, model_id: str | None) -> Path:
    """Write the MLflow model of `model_dir` to `out`: the pyfunc code (models from code,
    with the fraudops package beside it), the model directory as its artifact, the
    signature, an input example and the light requirements."""
    import mlflow
    from mlflow.models import Model

    from fraudops import mlflow_model

    mlflow.pyfunc.save_model(
        path=str(out),
        python_model=str(ENTRY_FILE),
        artifacts={mlflow_model.ARTIFACT: str(model_dir)},
        code_paths=[str(PACKAGE_DIR)],
        signature=mlflow_model.signature(),
        input_example=mlflow_model.input_example(),
        pip_requirements=requirements(),
        mlflow_model=Model(run_id=run_id, model_id=model_id, model_uuid=model_id),
    )
    return out


def fill(client, registered: Registered, model_dir: Path, run_id: str) -> None:
    """Store `model_dir` as the version's MLflow model and mark it ready. Storing it again
    (a retried promote) overwrites the same files."""
    from mlflow.entities import LoggedModelStatus

    with tempfile.TemporaryDirectory(prefix="fraudops-pyfunc-") as tmp:
        local = save_pyfunc(model_dir, Path(tmp) / "model", run_id, registered.model_id)
        client.log_model_artifacts(registered.model_id, str(local))
    client.finalize_logged_model(registered.model_id, LoggedModelStatus.READY)
    log.info("version %s holds %s as an MLflow model", registered.version, model_dir)
