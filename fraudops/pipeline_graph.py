"""The pipeline's stage graph, read from dvc.yaml, for runners other than `dvc repro`.

dvc.yaml is the one definition of the pipeline; the Airflow DAG `fraud_training` is built
from what this module reads out of it (one task per stage, an edge wherever a stage depends
on a path another stage produces), so the two can never disagree. Plain YAML reading, no
DVC or Airflow import: the DAG processor parses DAG files often and must do it fast.

Each task runs its stage through DVC (`dvc repro --single-item <stage>`), so DVC still
decides whether the stage is up to date and records it in dvc.lock. A stage's `meta` in
dvc.yaml may say how a runner treats it:
  refresh: always   re-run it on every pipeline run (it reads live state; DVC itself cannot
                    see that state change)
  retries: N        retries for this stage's task (e.g. 0 where a failure is a verdict on
                    the data, not a transient error)
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DVC_FILE = "dvc.yaml"
PROJECT_DIR_ENV = "FRAUDOPS_PROJECT_DIR"


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]  # outs, metrics and plots: every path the stage produces
    meta: dict[str, Any]

    @property
    def refresh_always(self) -> bool:
        return self.meta.get("refresh") == "always"

    @property
    def retries(self) -> int | None:
        value = self.meta.get("retries")
        return None if value is None else int(value)


def _paths(entries: list[Any] | None) -> tuple[str, ...]:
    """Paths of a deps/outs/metrics/plots list: plain strings or {path: options}."""
    paths = []
    for entry in entries or []:
        paths.extend([entry] if isinstance(entry, str) else list(entry))
    return tuple(p.rstrip("/") for p in paths)


def _stage(name: str, body: dict[str, Any]) -> Stage:
    if "foreach" in body or "matrix" in body:
        raise ValueError(f"{DVC_FILE}: stage {name!r}: foreach/matrix stages are not supported")
    cmd = body["cmd"]
    outs = _paths(body.get("outs")) + _paths(body.get("metrics")) + _paths(body.get("plots"))
    return Stage(
        name=name,
        cmd=" && ".join(cmd) if isinstance(cmd, list) else str(cmd),
        deps=_paths(body.get("deps")),
        outs=outs,
        meta=dict(body.get("meta") or {}),
    )


def load_stages(project_dir: Path) -> list[Stage]:
    """The stages of `project_dir/dvc.yaml`, in file order."""
    path = Path(project_dir) / DVC_FILE
    document = yaml.safe_load(path.read_text()) or {}
    stages = document.get("stages")
    if not stages:
        raise ValueError(f"{path}: no stages")
    return [_stage(name, body) for name, body in stages.items()]


def _overlaps(dep: str, out: str) -> bool:
    """A dep is fed by an out when they are the same path or one lies inside the other."""
    return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")


def upstream(stages: list[Stage]) -> dict[str, list[str]]:
    """For each stage, the stages whose outputs it depends on (DVC's own edges)."""
    graph: dict[str, list[str]] = {}
    for stage in stages:
        graph[stage.name] = [
            other.name
            for other in stages
            if other is not stage
            and any(_overlaps(dep, out) for dep in stage.deps for out in other.outs)
        ]
    return graph


def project_dir(dags_file: str | Path) -> Path:
    """The project a runner works in: FRAUDOPS_PROJECT_DIR, else the parent of the folder
    holding the DAG file (the repository layout)."""
    configured = os.environ.get(PROJECT_DIR_ENV)
    return Path(configured) if configured else Path(dags_file).resolve().parents[1]


def repro_command(stage: Stage, bin_dir: str | Path | None = None) -> str:
    """The shell command a runner uses for one stage: DVC runs it (or skips it when it is
    up to date) and records it in dvc.lock. `bin_dir` (the environment's bin directory) goes
    first on PATH, so `dvc` and the stages' `python` are the project's own."""
    force = " --force" if stage.refresh_always else ""
    command = f"dvc repro --single-item{force} {shlex.quote(stage.name)}"
    if bin_dir is None:
        return command
    return f'export PATH={shlex.quote(str(bin_dir))}:"$PATH" && {command}'
