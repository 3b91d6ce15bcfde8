"""export in subprocesses (the CLI dvc.yaml runs): TFLite parity with Keras, the latency
report, and a model.json the scorer accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fraudops.features import N_FEATURES
from fraudops.modelspec import MODEL_FILE, read_spec

ROOT = Path(__file__).resolve().parents[2]
TINY_CANDIDATE = ROOT / "tests" / "helpers" / "tiny_candidate.py"
SMALL_EXPORT = {"latency_runs": 200, "keras_latency_runs": 3, "latency_batch": 64}


def write_params(project: Path, **export: object) -> Path:
    """The repo's params.yaml with the export section overridden for a small, quick run."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["export"].update(SMALL_EXPORT, **export)
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_export(project: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "training.export", "--candidate", "models/candidate"]
    command += ["--features", "data/features", "--out", "models/export"]
    command += ["--report", "reports/export.json"]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=600)


def build_candidate(project: Path, run_id: str = "no-run") -> None:
    subprocess.run(
        [sys.executable, str(TINY_CANDIDATE), str(project), "--run-id", run_id],
        check=True,
        capture_output=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("export")
    write_params(project)
    build_candidate(project)
    result = run_export(project)
    assert result.returncode == 0, result.stderr[-3000:]
    return project


@pytest.mark.slow
def test_export_holds_parity_and_reports_latency(exported: Path):
    report = json.loads((exported / "reports" / "export.json").read_text())
    assert report["parity"]["passed"]
    assert report["parity"]["rows"] == 2000
    assert report["parity"]["max_abs_diff"] <= report["parity"]["tolerance"] == 1e-5
    assert report["quantization"] == "none"
    for runner in ("tflite", "keras_predict", "keras_call"):
        timings = report["latency"][runner]
        assert 0 < timings["batch1_median_us"] <= timings["batch1_p99_us"]
        assert timings["batch64_per_row_us"] > 0


@pytest.mark.slow
def test_model_json_is_valid_and_its_golden_set_reproduces(exported: Path):
    from ai_edge_litert.interpreter import Interpreter

    export_dir = exported / "models" / "export"
    spec = read_spec(export_dir)  # raises unless it meets fraudops.modelspec
    assert spec["version"] == "candidate" and spec["published_at"] is None
    assert spec["mlflow_run_id"] == "no-run" and spec["data_hash"] == "md5-test-data"
    assert spec["input"] == {"dtype": "float32", "shape": [-1, N_FEATURES]}
    assert spec["validation"]["success"] is True
    golden = spec["golden"]
    assert len(golden["inputs"]) == 32
    interp = Interpreter(model_path=str(export_dir / MODEL_FILE))
    index = interp.get_input_details()[0]["index"]
    interp.resize_tensor_input(index, [32, N_FEATURES])
    interp.allocate_tensors()
    interp.set_tensor(index, np.asarray(golden["inputs"], dtype=np.float32))
    interp.invoke()
    outputs = interp.get_tensor(interp.get_output_details()[0]["index"]).reshape(-1)
    assert np.abs(outputs - np.asarray(golden["outputs"])).max() <= golden["tolerance"]


@pytest.mark.slow
def test_export_publishes_the_drift_reference_beside_model_json(exported: Path):
    """The drift watch needs only the served directory: quantile bins of every training
    feature, and the model's held-out score distribution and band mix."""
    from fraudops import drift
    from fraudops.features import FEATURE_NAMES

    reference = drift.read_reference(exported / "models" / "export")
    assert list(reference["features"]) == list(FEATURE_NAMES)
    for column in (*reference["features"].values(), reference["score"]):
        assert sum(column["proportions"]) == pytest.approx(1.0)
        assert len(column["proportions"]) == len(column["edges"]) + 1
    assert reference["score_rows"] == 2000
    assert sum(reference["bands"].values()) == pytest.approx(1.0)


@pytest.mark.slow
def test_export_without_test_features_fails_naming_the_file(tmp_path: Path):
    write_params(tmp_path)
    result = run_export(tmp_path)
    assert result.returncode == 1
    assert "data/features/test.parquet: missing" in result.stderr
