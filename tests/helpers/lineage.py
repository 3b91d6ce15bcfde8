"""Lineage read back for tests: what DVC recorded for a file, and what the training stages
logged to MLflow (the runs train.json names, a run's dataset inputs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def dvc_recorded(root: Path, stage: str, path: str) -> str:
    """The md5 DVC recorded for a file inside a directory out of `stage`: dvc.lock holds the
    directory's hash, whose manifest in the project's DVC cache lists each file's."""
    lock = yaml.safe_load((Path(root) / "dvc.lock").read_text())
    out = next(o for o in lock["stages"][stage]["outs"] if path.startswith(f"{o['path']}/"))
    manifest = Path(root) / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
    relpath = path.removeprefix(f"{out['path']}/")
    return next(e["md5"] for e in json.loads(manifest.read_text()) if e["relpath"] == relpath)


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
