"""The model sidecar (`model.json`) and atomic publishing into models/serving/.

A served model is a directory `<version>/` holding `model.tflite` and `model.json`.
Everything that loads a model checks the sidecar first; publishing writes to a temporary
name and renames it into place, so a watcher never sees half a model."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fraudops.features import FEATURE_NAMES

MODEL_FILE = "model.tflite"
SPEC_FILE = "model.json"
TMP_PREFIX = ".tmp-"
REQUIRED_KEYS = (
    "version",
    "mlflow_run_id",
    "data_hash",
    "feature_names",
    "thresholds",
    "metrics",
    "golden",
    "explain",
    "published_at",
)
# model.json, as promote writes it:
#   version, mlflow_run_id, registered_version, data_hash, git_commit, created_at,
#   published_at, feature_names (== fraudops.features.FEATURE_NAMES), input
#   {"dtype": "float32", "shape": [-1, F]}, thresholds {"challenge", "block"},
#   metrics {...}, golden {"inputs": [[F floats], ...], "outputs": [p, ...], "tolerance"},
#   explain {"mean": [F], "std": [F], "weight": [F]} (see fraudops.bands.Explainer),
#   labels {"count", "window_start", "window_end"}, validation {"success", "report"}


class ModelSpecError(ValueError):
    """model.json is missing, unreadable or does not match this code's feature contract."""


def read_spec(model_dir: Path) -> dict[str, Any]:
    """Read and check `model_dir/model.json`; raise ModelSpecError naming the problem."""
    path = Path(model_dir) / SPEC_FILE
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ModelSpecError(f"{path}: missing") from err
    except (OSError, json.JSONDecodeError) as err:
        raise ModelSpecError(f"{path}: unreadable ({err})") from err
    check_spec(spec, where=str(path))
    return spec


def check_spec(spec: dict[str, Any], where: str = "model.json") -> None:
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise ModelSpecError(f"{where}: missing keys {missing}")
    if list(spec["feature_names"]) != list(FEATURE_NAMES):
        raise ModelSpecError(f"{where}: feature_names differ from fraudops.features")
    thresholds = spec["thresholds"]
    if not 0.0 <= thresholds.get("challenge", -1) <= thresholds.get("block", -1) <= 1.0:
        raise ModelSpecError(f"{where}: thresholds need 0 <= challenge <= block <= 1")
    golden = spec["golden"]
    if len(golden.get("inputs", [])) != len(golden.get("outputs", [])) or not golden["inputs"]:
        raise ModelSpecError(f"{where}: golden inputs and outputs must be non-empty and match")


def write_spec(model_dir: Path, spec: dict[str, Any]) -> None:
    check_spec(spec)
    (Path(model_dir) / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def publish(source_dir: Path, serving_root: Path, version: str) -> Path:
    """Copy a model directory into `serving_root/<version>` atomically.

    The copy is made under a hidden temporary name and renamed into place; an existing
    directory of the same version (a rollback re-publishing it) is moved aside first, so
    the new one lands as a fresh rename that the scorer sees."""
    serving_root = Path(serving_root)
    serving_root.mkdir(parents=True, exist_ok=True)
    tmp = serving_root / f"{TMP_PREFIX}{version}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        _stage(source_dir, tmp, version)
    except BaseException:  # a full disk, a bad source: leave nothing behind to fill it more
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = serving_root / version
    if final.exists():
        retired = serving_root / f"{TMP_PREFIX}retired-{version}-{time.monotonic_ns()}"
        final.rename(retired)
        tmp.rename(final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        tmp.rename(final)
    return final


def _stage(source_dir: Path, tmp: Path, version: str) -> None:
    """The copy under its temporary name, its sidecar stamped, both files on disk."""
    shutil.copytree(source_dir, tmp)
    spec = json.loads((tmp / SPEC_FILE).read_text())
    spec["version"] = version
    spec["published_at"] = now_iso()
    write_spec(tmp, spec)
    for f in (tmp / MODEL_FILE, tmp / SPEC_FILE):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def published_versions(serving_root: Path) -> list[tuple[str, dict[str, Any]]]:
    """(version, spec) of each readable published model, oldest publication first."""
    found = []
    for d in Path(serving_root).glob("*"):
        if d.is_dir() and not d.name.startswith("."):
            try:
                found.append((d.name, read_spec(d)))
            except ModelSpecError:
                continue
    return sorted(found, key=lambda item: item[1]["published_at"])
