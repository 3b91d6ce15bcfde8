"""End to end: `airflow dags test fraud_training` on tiny params, against a real MLflow
server and a real Postgres, with Airflow's home (SQLite) in a temp dir.

1. A clean project: every stage runs through DVC inside its Airflow task, and the run ends
   with a model published in models/serving/, alias `champion` on it, and the promotion in
   the audit log.
2. A corrupted batch: the generate stage's output is replaced by a broken batch and committed
   to DVC as generate's output (as if the synthesizer had produced it). The next run stops at
   validate; nothing downstream runs, nothing is published, the champion stays."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest

from fraudops.modelspec import published_versions
from testkit.pipeline_project import BIN, airflow_env, dvc, make_project, run

# The whole pipeline, even on tiny params, takes minutes on two busy cores.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
]

DAG_ID = "fraud_training"


def airflow(args: list[str], project: Path, env: dict[str, str], timeout: float = 2400):
    return run([str(BIN / "airflow"), *args], project, env, timeout)


def final_run(output: str) -> tuple[str, str]:
    """(run id, state) of the run `airflow dags test` reports as finished."""
    found = re.findall(
        r"DagRun Finished: dag_id=fraud_training.*?run_id=([^,]+),.*?state=(\w+)", output
    )
    assert found, output[-4000:]
    return found[-1]


def task_states(run_id: str, project: Path, env: dict[str, str]) -> dict[str, str]:
    listed = airflow(["tasks", "states-for-dag-run", DAG_ID, run_id, "-o", "json"], project, env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = json.loads(listed.stdout.strip().splitlines()[-1])
    return {row["task_id"]: row["state"] for row in rows}


def corrupt_batch(path: Path) -> None:
    """Broken rows a real upstream bug produces: negative and missing amounts, an unknown
    transaction type, timestamps out of order."""
    frame = pd.read_parquet(path)
    rng = np.random.default_rng(0)
    bad = rng.choice(len(frame), size=len(frame) // 10, replace=False)
    frame.loc[bad[::3], "amount"] = -frame.loc[bad[::3], "amount"]
    frame.loc[bad[1::3], "amount"] = np.nan
    frame.loc[bad[2::3], "type"] = "WIRE"
    frame = frame.iloc[::-1].reset_index(drop=True)
    frame.to_parquet(path, index=False)


@pytest.fixture(scope="module")
def e2e_database_url(database_url: str):
    """A database of this module's own: labels that other tests left in the session database
    would otherwise flow into this pipeline run through collect_feedback."""
    from fraudops import db

    name = f"fraudops_e2e_{uuid.uuid4().hex[:8]}"
    url = db.create_database(database_url, name)
    db.migrate(url)
    yield url
    db.drop_database(database_url, name)


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, mlflow_tracking_uri: str, e2e_database_url: str
):
    """The project, the environment every Airflow command runs with, and the model name."""
    tag = uuid.uuid4().hex[:8]
    name = f"fraud-detector-e2e-{tag}"
    overrides = {"train": {"experiment": f"test-e2e-{tag}"}, "promote": {"registered_model": name}}
    root = tmp_path_factory.mktemp("e2e")
    project = make_project(root / "project", overrides)
    env = airflow_env(project, root / "airflow", MLFLOW_TRACKING_URI=mlflow_tracking_uri,
                      DATABASE_URL=e2e_database_url)  # fmt: skip
    migrated = airflow(["db", "migrate"], project, env, timeout=600)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return project, env, name


@pytest.fixture(scope="module")
def first_run(setup) -> str:
    project, env, _ = setup
    result = airflow(["dags", "test", DAG_ID], project, env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def test_clean_run_promotes_a_model(setup, first_run, mlflow_tracking_uri, e2e_database_url):
    from mlflow import MlflowClient

    project, env, name = setup
    run_id, state = final_run(first_run)
    assert state == "success"
    states = task_states(run_id, project, env)
    assert set(states.values()) == {"success"} and len(states) == 10
    assert "Running stage 'train'" in first_run  # each stage's output is in its task log
    promotion = json.loads((project / "reports" / "promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion
    version = str(promotion["registered_version"])
    served = published_versions(project / "models" / "serving")
    assert [v for v, _ in served] == [f"v{version}"]
    assert served[0][1]["mlflow_run_id"] == promotion["mlflow_run_id"]
    client = MlflowClient(tracking_uri=mlflow_tracking_uri, registry_uri=mlflow_tracking_uri)
    assert client.get_model_version_by_alias(name, "champion").version == version
    with psycopg2.connect(e2e_database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT kind FROM audit_log WHERE subject = %s", (f"{name}/v{version}",))
        assert cur.fetchall() == [("promotion",)]
    assert dvc(project, "status").stdout.strip().endswith("up to date.")


def test_corrupted_batch_stops_at_validation(setup, first_run, mlflow_tracking_uri):
    from mlflow import MlflowClient

    project, env, name = setup
    serving = project / "models" / "serving"
    before = [(v, s["published_at"]) for v, s in published_versions(serving)]
    corrupt_batch(project / "data" / "raw" / "synthetic.parquet")
    committed = dvc(project, "commit", "--force", "generate", env=env)
    assert committed.returncode == 0, committed.stderr
    result = airflow(["dags", "test", DAG_ID], project, env)
    output = result.stdout + result.stderr
    run_id, state = final_run(output)
    assert result.returncode != 0 and state == "failed"
    states = task_states(run_id, project, env)
    assert states["validate"] == "failed"
    assert states["generate"] == "success"  # up to date: the broken batch is its output
    assert "Stage 'generate' didn't change, skipping" in output
    downstream = ("featurize", "train", "evaluate", "export", "promote")
    assert {states[task] for task in downstream} == {"upstream_failed"}, states
    assert [(v, s["published_at"]) for v, s in published_versions(serving)] == before
    client = MlflowClient(tracking_uri=mlflow_tracking_uri, registry_uri=mlflow_tracking_uri)
    assert client.get_model_version_by_alias(name, "champion").version == before[0][0][1:]
    result_json = json.loads((project / "reports" / "validation" / "result.json").read_text())
    assert result_json["success"] is False
