"""The daily digest DAG parses and follows the house rules (schedule, retries, tags)."""

from __future__ import annotations

from tests.helpers.airflow_home import load_dag


def test_the_digest_dag_is_daily_with_retries_and_tags(project_root, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    dag = load_dag(project_root, "fraud_daily_digest")
    assert dag.catchup is False
    assert {"fraudops", "reporting"} <= set(dag.tags)
    assert dag.doc_md and "digest" in dag.doc_md
    assert [(t.task_id, t.retries) for t in dag.tasks] == [("write_digest", 2)]
    assert "date" in dag.params
