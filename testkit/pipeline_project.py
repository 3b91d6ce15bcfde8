"""A throwaway copy of the project for pipeline tests: dvc.yaml, params.yaml (overridden to
tiny sizes), the DAGs and the stage code, in a fresh git + DVC repository with a
local-directory remote. The real repository's dvc.lock, data and serving directory are never
touched."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# build/geoip: the IP country database `make install` placed, a dependency of two stages.
COPIED = ("dvc.yaml", ".dvcignore", "dags", "training", "fraudops", "feature_checks", "jobs",
          "build/geoip")  # fmt: skip

# Small enough that the whole pipeline runs in a few minutes on two cores, big enough that
# every (class, type) segment has rows for the synthesizer and the test set has frauds.
TINY: dict[str, dict[str, Any]] = {
    "reference": {"n_users": 1500, "n_steps": 240, "ato_rate": 0.004, "card_testing_rate": 0.004},
    "fit_synthesizer": {"max_rows": 5000, "max_templates": 2000, "quality_rows": 1000},
    "generate": {"n_rows": 20000, "fraud_rate": 0.02, "chunk_rows": 20000},
    "train": {
        "hidden_units": [16],
        "max_epochs": 2,
        "batch_size": 512,
        "explain_rows": 5000,
        "baseline": {"max_iter": 30},
    },
    "export": {"latency_runs": 200, "keras_latency_runs": 3, "latency_batch": 64},
    # On tiny data PR-AUC is noise: the gate's quality checks are tested in test_promote.
    "promote": {"max_gap_to_baseline": 1.0},
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` applied recursively (dicts merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 1800):
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def dvc(project: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 1800):
    return run([sys.executable, "-m", "dvc", *args], project, env, timeout)


def pipeline_env(**values: str | None) -> dict[str, str]:
    """The process environment with the venv first on PATH and the given settings (e.g.
    MLFLOW_TRACKING_URI); a None value removes the variable. No FRAUDOPS_* setting of the
    caller's shell leaks in: the stages publish into the project's own models/serving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env["PATH"] = f"{BIN}:{os.environ.get('PATH', '')}"
    for key, value in values.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def airflow_env(project: Path, home: Path, **values: str | None) -> dict[str, str]:
    """`pipeline_env` for the airflow CLI running the project's own DAGs (the DAG built from
    its dvc.yaml) with a private home and no example DAGs."""
    return pipeline_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(project / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        FRAUDOPS_PROJECT_DIR=str(project),
        **values,
    )


def make_project(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the pipeline into `dest`, write tiny params, init git + DVC, commit."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, dest / name)
    params = merged(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params = merged(params, overrides or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    remote = dest.parent / f"{dest.name}-dvc-remote"
    git = ["git", "-c", "user.name=fraudops-test", "-c", "user.email=test@fraudops.invalid"]
    for command in (
        ["git", "init", "-q"],
        [sys.executable, "-m", "dvc", "init", "-q"],
        [sys.executable, "-m", "dvc", "config", "core.analytics", "false"],
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)],
        ["git", "add", "-A"],
        [*git, "commit", "-q", "-m", "test project"],
    ):
        result = run(command, dest)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr}")
    return dest
