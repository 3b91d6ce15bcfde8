"""promote against a real MLflow server and Postgres: registry, atomic publishing, audit log,
and the champion as an MLflow model that scores raw transactions as the scorer does.

Each test registers under its own model name and publishes into its own serving directory,
so tests do not see each other's champions."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
import yaml

from fraudops.modelspec import MODEL_FILE, SPEC_FILE, read_spec, write_spec
from testkit.pipeline_project import BIN
from testkit.transactions import make_transactions
from tests.helpers.serving_env import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
TINY_CANDIDATE = ROOT / "tests" / "helpers" / "tiny_candidate.py"


def metrics(candidate: float, baseline: float, champion: float | None = None) -> dict:
    found = {"candidate": {"pr_auc": candidate}, "baseline": {"pr_auc": baseline}}
    if champion is not None:
        found["champion"] = {"pr_auc": champion, "version": "v1"}
    return found


# --- against a real MLflow server, Postgres and a DVC repository ---------------------------


def _run(command: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def new_run(client, experiment_id: str) -> str:
    run = client.create_run(experiment_id)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def mlflow_client(mlflow_tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_tracking_uri, registry_uri=mlflow_tracking_uri)


@pytest.fixture(scope="module")
def experiment_id(mlflow_client) -> str:
    return mlflow_client.create_experiment(f"test-promote-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, mlflow_client, experiment_id) -> Path:
    """A DVC repository (local remote) holding one exported tiny candidate."""
    project = tmp_path_factory.mktemp("promote")
    dvc = [sys.executable, "-m", "dvc"]
    for command in (["git", "init", "-q"], [*dvc, "init", "-q"]):
        assert _run(command, project).returncode == 0
    remote = project.parent / f"{project.name}-remote"
    assert _run([*dvc, "remote", "add", "-d", "local", str(remote)], project).returncode == 0
    run_id = new_run(mlflow_client, experiment_id)
    subprocess.run([sys.executable, str(TINY_CANDIDATE), str(project), "--run-id", run_id],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["export"].update(latency_runs=200, keras_latency_runs=3, latency_batch=64)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    export = [sys.executable, "-m", "training.export", "--candidate", "models/candidate"]
    export += ["--features", "data/features", "--out", "models/export"]
    result = _run([*export, "--report", "reports/export.json"], project)
    assert result.returncode == 0, result.stderr[-3000:]
    return project


@pytest.fixture
def case(project: Path, tmp_path: Path) -> dict:
    """Per test: its own registered model name, params, serving dir and report paths."""
    name = f"fraud-detector-{uuid.uuid4().hex[:8]}"
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["promote"]["registered_model"] = name
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return {"name": name, "dir": tmp_path, "serving": tmp_path / "serving"}


def promote(project: Path, case: dict, found: dict, env: dict, export: Path | None = None):
    """Run the promote CLI in the project; returns (exit code, promotion.json or None)."""
    metrics_path, out = case["dir"] / "metrics.json", case["dir"] / "promotion.json"
    metrics_path.write_text(json.dumps(found))
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "training.promote",
        "--params",
        str(case["dir"] / "params.yaml"),
    ]
    command += ["--export", str(export or project / "models" / "export")]
    command += ["--metrics", str(metrics_path), "--export-report", "reports/export.json"]
    command += ["--out", str(out)]
    # The served-model directory comes from the scorers' own setting, nowhere else.
    result = _run(command, project, {**env, "FRAUDOPS_MODEL_DIR": str(case["serving"])})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stderr


@pytest.fixture
def env(mlflow_tracking_uri: str, database_url: str) -> dict:
    import os

    return {**os.environ, "MLFLOW_TRACKING_URI": mlflow_tracking_uri, "DATABASE_URL": database_url}


def audit_rows(database_url: str, subject: str) -> list[tuple]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT kind, detail FROM audit_log WHERE subject = %s", (subject,))
        return cur.fetchall()


@pytest.mark.slow
def test_passing_candidate_is_registered_published_and_champion(
    project, case, env, mlflow_client, database_url
):
    result, log = promote(project, case, metrics(0.80, 0.81), env)
    assert result["decision"] == "promoted", result
    assert result["dvc_push"] == "pushed" and result["audit_logged"] is True
    version = str(result["registered_version"])
    served = case["serving"] / f"v{version}"
    assert sorted(p.name for p in case["serving"].iterdir()) == [served.name]  # no temp dirs
    spec = read_spec(served)
    assert spec["version"] == f"v{version}" and spec["published_at"]
    assert spec["registered_version"] == int(version)
    assert spec["metrics"]["test"] == {"pr_auc": 0.80}
    exported = project / "models" / "export"
    assert (served / MODEL_FILE).read_bytes() == (exported / MODEL_FILE).read_bytes()
    assert read_spec(exported)["version"] == "candidate"  # the DVC output is untouched
    name = case["name"]
    assert mlflow_client.get_model_version_by_alias(name, "champion").version == version
    assert mlflow_client.get_model_version_by_alias(name, "challenger").version == version
    mv = mlflow_client.get_model_version(name, version)
    assert mv.run_id == spec["mlflow_run_id"]
    assert mv.tags["promotion"] == "passed" and mv.tags["data_hash"] == "md5-test-data"
    assert json.loads(mv.tags["validation"])["success"] is True
    (kind, detail), = audit_rows(database_url, f"{name}/v{version}")  # fmt: skip
    assert kind == "promotion" and detail["mlflow_run_id"] == spec["mlflow_run_id"]
    again, _ = promote(project, case, metrics(0.80, 0.81), env)  # a retried task
    assert again["registered_version"] == int(version)


@pytest.mark.slow
def test_worse_candidate_is_rejected_and_nothing_is_published(
    project, case, env, mlflow_client, experiment_id
):
    import mlflow

    first, _ = promote(project, case, metrics(0.90, 0.90), env)
    assert first["decision"] == "promoted"
    before = {p.name: (p / MODEL_FILE).stat().st_mtime_ns for p in case["serving"].iterdir()}
    worse = case["dir"] / "worse-export"  # another run's export of the same network
    shutil.copytree(project / "models" / "export", worse)
    spec = read_spec(worse)
    spec["mlflow_run_id"] = new_run(mlflow_client, experiment_id)
    write_spec(worse, spec)
    result, log = promote(project, case, metrics(0.85, 0.86, champion=0.90), env, worse)
    assert result["decision"] == "rejected"
    assert result["reasons"] and result["reasons"][0].startswith("beats_champion")
    assert "rejected" in log
    after = {p.name: (p / MODEL_FILE).stat().st_mtime_ns for p in case["serving"].iterdir()}
    assert after == before
    name, champion = case["name"], str(first["registered_version"])
    rejected = str(result["registered_version"])
    assert rejected != champion
    assert mlflow_client.get_model_version_by_alias(name, "champion").version == champion
    assert mlflow_client.get_model_version_by_alias(name, "challenger").version == rejected
    tags = mlflow_client.get_model_version(name, rejected).tags
    assert tags["promotion"] == "rejected" and "champion 0.9000" in tags["rejection_reason"]
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    challenger = mlflow.pyfunc.load_model(f"models:/{name}@challenger")  # the export, as is
    assert set(challenger.predict(raw_rows().head(5))["model_version"]) == {"candidate"}


# --- the champion as an MLflow model ---------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def raw_rows() -> pd.DataFrame:
    """Raw transactions in time order (the order the scorer sees them), ~20 per user."""
    return make_transactions(300, fraud_rate=0.1, seed=4, days=2)


def scorer_scores(serving: Path, rows: pd.DataFrame):
    """The serving scoring core, from a fresh per-user state, over the rows one by one."""
    from serving.model_store import ModelStore
    from serving.scoring import ScoringCore

    store = ModelStore(serving, prewarm=0)
    assert store.load_latest() is not None
    core = ScoringCore(store)
    batches = [core.score([tx]) for tx in rows.to_dict("records")]
    return np.concatenate([b.scores for b in batches]), [b.band_names()[0] for b in batches]


@pytest.fixture
def champion(project, case, env, mlflow_tracking_uri) -> dict:
    """A promoted candidate: its served directory and its `models:/<name>@champion` URI."""
    import mlflow

    result, _ = promote(project, case, metrics(0.80, 0.81), env)
    assert result["decision"] == "promoted", result
    mlflow.set_tracking_uri(mlflow_tracking_uri)
    return {"served": Path(result["serving_path"]), "uri": f"models:/{case['name']}@champion"}


@pytest.mark.slow
def test_champion_is_an_mlflow_model_of_the_served_bytes(champion, project, case, env):
    import mlflow

    served, uri = champion["served"], champion["uri"]
    promote(project, case, metrics(0.80, 0.81), env)  # a retry re-publishes: MLflow follows
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(case["dir"] / "dl")))
    for name in (MODEL_FILE, SPEC_FILE):
        assert sha256(local / "artifacts" / served.name / name) == sha256(served / name)
    model = mlflow.pyfunc.load_model(uri)
    assert [c.name for c in model.metadata.get_input_schema().inputs][:3] == [
        "transaction_id", "user_id", "timestamp",
    ]  # fmt: skip
    requirements = (local / "requirements.txt").read_text()
    assert "ai-edge-litert" in requirements and "tensorflow" not in requirements
    rows = raw_rows()
    got = model.predict(rows)  # is_fraud and dest_id ride along; the model ignores them
    scores, bands = scorer_scores(served.parent, rows)
    assert list(got["transaction_id"]) == list(rows["transaction_id"])
    np.testing.assert_allclose(got["score"].to_numpy(), scores, rtol=0, atol=1e-6)
    assert list(got["band"]) == bands
    assert set(got["model_version"]) == {served.name}


@contextlib.contextmanager
def mlflow_serve(uri: str, port: int, env: dict, log_path: Path):
    """`mlflow models serve` in its own process group, stopped with it on exit (it runs
    uvicorn from PATH, hence the venv first)."""
    command = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    env = {**env, "PATH": f"{BIN}:{env.get('PATH', '')}"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_mlflow_models_serve_scores_like_the_scorer(champion, case, env):
    rows = raw_rows().head(50)
    scores, bands = scorer_scores(champion["served"].parent, rows)
    port = free_port()
    with mlflow_serve(champion["uri"], port, env, case["dir"] / "serve.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is not None or responds(f"{base}/ping"), "mlflow serve", 180)
        assert proc.poll() is None, (case["dir"] / "serve.log").read_text()[-3000:]
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        request = urllib.request.Request(
            f"{base}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    np.testing.assert_allclose([p["score"] for p in predictions], scores, rtol=0, atol=1e-6)
    assert [p["band"] for p in predictions] == bands
