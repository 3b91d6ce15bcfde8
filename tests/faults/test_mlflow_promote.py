"""MLflow unreachable during `promote`: the promotion fails, nothing is published and no
alias moves; with MLflow back, the next run promotes. A pipeline-tier case (MLflow), with
a tiny built model as the export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from fraudops.modelspec import read_spec, write_spec
from tests.helpers.serving_env import ROOT, process_env

EXPORT_REPORT = {
    "parity": {"passed": True, "max_abs_diff": 0.0, "tolerance": 1e-4},
    "latency": {"tflite": {"batch1_p99_us": 1.0}},
}
METRICS = {"candidate": {"pr_auc": 0.80}, "baseline": {"pr_auc": 0.81}}


@pytest.fixture
def case(private_stack, built_models, tmp_path):
    """An export of a run of the private MLflow, its reports and its own registered name."""
    from mlflow import MlflowClient

    private_stack.up("mlflow")
    uri = private_stack.settings.mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment(f"faults-{uuid.uuid4().hex[:8]}"))
    client.set_terminated(run.info.run_id)
    export = tmp_path / "export"
    shutil.copytree(built_models / "v1", export)
    spec = read_spec(export)
    write_spec(export, {**spec, "mlflow_run_id": run.info.run_id})
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["promote"]["registered_model"] = f"fraud-detector-{uuid.uuid4().hex[:8]}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "export.json").write_text(json.dumps(EXPORT_REPORT))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    return {"dir": tmp_path, "client": client, "name": params["promote"]["registered_model"]}


def promote(private_stack, case) -> subprocess.CompletedProcess:
    d = case["dir"]
    settings = private_stack.settings
    env = {
        **process_env(settings),
        "DATABASE_URL": "",
        "FRAUDOPS_MODEL_DIR": str(d / "serving"),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",  # fail in seconds, not after minutes
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }
    command = [sys.executable, "-m", "training.promote", "--params", str(d / "params.yaml"),
               "--export", str(d / "export"), "--metrics", str(d / "metrics.json"),
               "--export-report", str(d / "export.json"),
               "--out", str(d / "promotion.json")]  # fmt: skip
    return subprocess.run(command, cwd=d, env=env, capture_output=True, text=True, timeout=600)


def test_promote_with_mlflow_unreachable_publishes_nothing_and_the_next_run_succeeds(
    private_stack, case, fault_report
):
    serving = case["dir"] / "serving"
    private_stack.down("mlflow")
    failed = promote(private_stack, case)
    published = sorted(p.name for p in serving.iterdir()) if serving.exists() else []
    decided = (case["dir"] / "promotion.json").exists()
    back = time.monotonic()
    private_stack.up("mlflow")
    second = promote(private_stack, case)
    recovery = time.monotonic() - back
    fault_report(
        "MLflow unreachable during promote", sent=1, scored=1, lost=0, twice=0,
        recovery_s=recovery,
        note=f"exit {failed.returncode}, published {published}; next run exit "
        f"{second.returncode}, published {sorted(p.name for p in serving.iterdir())}",
    )  # fmt: skip
    assert failed.returncode != 0 and not decided
    assert published == []
    assert second.returncode == 0, second.stderr[-3000:]
    result = json.loads((case["dir"] / "promotion.json").read_text())
    version = str(result["registered_version"])
    assert result["decision"] == "promoted"
    assert sorted(p.name for p in serving.iterdir()) == [f"v{version}"]
    champion = case["client"].get_model_version_by_alias(case["name"], "champion")
    assert champion.version == version
