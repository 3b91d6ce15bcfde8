"""The fraud_training DAG: imports cleanly, follows the house rules, and is dvc.yaml's graph.

The reference graph comes from DVC itself (its index of dvc.yaml), not from the module the
DAG uses, so a parsing mistake in fraudops.pipeline_graph cannot hide here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fraudops import pipeline_graph

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "fraud_training.py"
STAGE_ORDER = [
    "reference",
    "fit_synthesizer",
    "generate",
    "validate",
    "collect_feedback",
    "featurize",
    "train",
    "evaluate",
    "export",
    "promote",
]


def dvc_graph(project: Path) -> dict[str, set[str]]:
    """stage -> the stages it depends on, as DVC computes it."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        graph = repo.index.graph
        found = {stage.addressing: set() for stage in graph.nodes}
        for stage, dependency in graph.edges:
            found[stage.addressing].add(dependency.addressing)
    return found


def load_dag(dag_file: Path, monkeypatch: pytest.MonkeyPatch, project: Path | None = None):
    from airflow.dag_processing.dagbag import DagBag

    if project is not None:
        monkeypatch.setenv(pipeline_graph.PROJECT_DIR_ENV, str(project))
    bag = DagBag(dag_folder=str(dag_file))
    assert bag.import_errors == {}
    return bag.dags["fraud_training"]


def test_stages_are_read_in_order_with_every_produced_path():
    stages = pipeline_graph.load_stages(ROOT)
    assert [s.name for s in stages] == STAGE_ORDER
    evaluate = next(s for s in stages if s.name == "evaluate")
    assert set(evaluate.outs) == {"reports/metrics.json", "reports/plots/pr_curve.csv"}


def test_graph_module_agrees_with_dvc():
    graph = pipeline_graph.upstream(pipeline_graph.load_stages(ROOT))
    assert {k: set(v) for k, v in graph.items()} == dvc_graph(ROOT)


def test_live_state_stage_is_forced_and_the_rest_are_not():
    commands = {s.name: pipeline_graph.repro_command(s) for s in pipeline_graph.load_stages(ROOT)}
    assert commands["collect_feedback"] == "dvc repro --single-item --force collect_feedback"
    assert commands["train"] == "dvc repro --single-item train"


def test_dag_imports_and_follows_the_house_rules(monkeypatch: pytest.MonkeyPatch):
    dag = load_dag(DAG_FILE, monkeypatch)
    assert {"fraudops", "training"} <= set(dag.tags)
    assert dag.doc_md and "dvc repro" in dag.doc_md
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.max_active_tasks == 1
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert "fraudops://feedback/labels" in repr(dag.timetable)
    retries = {t.task_id: t.retries for t in dag.tasks}
    assert retries.pop("validate") == 0  # a bad batch stays bad
    assert set(retries.values()) == {2}


def test_dag_is_dvc_yaml_graph_one_task_per_stage(monkeypatch: pytest.MonkeyPatch):
    dag = load_dag(DAG_FILE, monkeypatch)
    tasks = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert tasks == dvc_graph(ROOT)
    assert sorted(tasks) == sorted(STAGE_ORDER)


def test_dag_follows_the_project_dvc_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The DAG is derived from the project's dvc.yaml at parse time, not written twice:
    a stage added there becomes a task with the right edges."""
    document = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    document["stages"]["report_card"] = {
        "cmd": "python -m training.report_card --promotion reports/promotion.json",
        "deps": ["reports/promotion.json", "reports/metrics.json"],
        "outs": ["reports/report_card.html"],
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags)
    dag = load_dag(dags / DAG_FILE.name, monkeypatch, project=tmp_path)
    assert dag.get_task("report_card").upstream_task_ids == {"promote", "evaluate"}
    assert "--single-item report_card" in dag.get_task("report_card").op_args[0]


def test_parsing_the_dag_files_loads_no_database_driver(tmp_path: Path):
    """The DAG processor parses every DAG file often: database access belongs in the tasks."""
    code = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(ROOT / 'dags')!r})\n"
        "assert bag.import_errors == {}, bag.import_errors\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg2', 'redis')))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
