"""The session's MLflow fixture is a real tracking server that stores runs and artifacts."""

from __future__ import annotations

import uuid


def test_mlflow_fixture_serves_a_real_tracking_server(mlflow_tracking_uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_tracking_uri)
    experiment_id = client.create_experiment(f"test-{uuid.uuid4().hex}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "pr_auc", 0.5)
    client.log_text(run.info.run_id, "hello", "notes/hello.txt")
    assert client.get_run(run.info.run_id).data.metrics == {"pr_auc": 0.5}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/hello.txt"]
