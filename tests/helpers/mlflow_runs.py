"""What the training stages logged to MLflow, read back: the runs train.json names and the
dataset inputs of a run."""

from __future__ import annotations

from typing import Any


def training_runs(client, info: dict[str, Any]) -> dict[str, Any]:
    """The candidate, baseline and ablation runs of one train.json, by role."""
    ids = {
        "candidate": info["mlflow_run_id"],
        "baseline": info["baseline_run_id"],
        "ablation": info["ablation"]["run_id"],
    }
    return {role: client.get_run(run_id) for role, run_id in ids.items()}


def dataset_inputs(run) -> list[tuple[str, Any, dict[str, str]]]:
    """(context, dataset, input tags) of each of the run's dataset inputs."""
    out = []
    for item in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        out.append((tags["mlflow.data.context"], item.dataset, tags))
    return out
