"""`dvc repro` of the whole pipeline on tiny params (real MLflow server, no database).

A second `dvc repro` with nothing changed must run nothing (that is what lets Airflow run
every stage through DVC on every schedule), and changing one params key re-runs only the
stages that read it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
import yaml

from fraudops.modelspec import published_versions
from fraudops.pipeline_graph import load_stages, repro_command
from testkit.pipeline_project import BIN, dvc
from tests.helpers.lineage import dataset_inputs, dvc_recorded, training_runs

# The whole pipeline, even on tiny params, takes minutes on two busy cores.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
]

UP_TO_DATE = "Data and pipelines are up to date."


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)


def test_first_repro_runs_every_stage_and_promotes(repro):
    project, _, output = repro
    assert sorted(stages_run(output)) == sorted(
        yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    )
    promotion = json.loads((project / "reports" / "promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion
    assert [v for v, _ in published_versions(project / "models" / "serving")] == [
        f"v{promotion['registered_version']}"
    ]


def test_train_runs_carry_dvc_digests_under_one_parent(repro, mlflow_tracking_uri):
    """Under `dvc repro` the runs' dataset digests are the md5s dvc.lock's features out
    records, and the runs of the repro share a parent named by commit, params and data."""
    from mlflow import MlflowClient

    project = repro[0]
    info = json.loads((project / "models" / "candidate" / "train.json").read_text())
    sets = {"training": "train", "validation": "valid", "test": "test"}
    if json.loads((project / "reports" / "metrics.json").read_text())["feedback"]:
        sets["feedback"] = "feedback"
    paths = {context: f"data/features/{name}.parquet" for context, name in sets.items()}
    expected = {(c, p, dvc_recorded(project, "featurize", p)) for c, p in paths.items()}
    for run in training_runs(MlflowClient(mlflow_tracking_uri), info).values():
        inputs = dataset_inputs(run)
        seen = {(c, json.loads(d.source)["uri"], d.digest) for c, d, _ in inputs}
        assert seen == expected
        assert {tags["fraudops.digest_source"] for _, _, tags in inputs} == {"dvc"}
        assert run.data.tags["mlflow.parentRunId"] == info["parent_run_id"]
    assert info["pipeline_run"].startswith(f"local:{info['git_commit'][:12]}-")


def test_second_repro_runs_nothing(repro):
    project, env, _ = repro
    second = dvc(project, "repro", env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert stages_run(second.stdout) == []
    assert UP_TO_DATE in second.stdout
    status = dvc(project, "status", env=env)
    assert status.returncode == 0 and UP_TO_DATE in status.stdout


def test_one_params_key_reruns_only_the_stages_that_read_it(repro):
    project, env, _ = repro
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["export"]["golden_rows"] = 16
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = dvc(project, "repro", env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert stages_run(rerun.stdout) == ["export", "promote"]
    spec = json.loads((project / "models" / "export" / "model.json").read_text())
    assert len(spec["golden"]["inputs"]) == 16


def test_a_stage_killed_mid_run_reruns_and_leaves_dvc_lock_consistent(repro):
    """What an Airflow task of the training DAG runs (`repro_command`), SIGKILLed while its
    stage works: dvc.lock keeps the last completed run, and the retry completes."""
    project, env, _ = repro
    lock_before = yaml.safe_load((project / "dvc.lock").read_text())
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["seed"] = int(params["train"]["seed"]) + 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    train = next(s for s in load_stages(project) if s.name == "train")
    command = ["bash", "-c", repro_command(train, BIN)]
    task = subprocess.Popen(
        command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        for line in task.stdout:  # bounded: the stage announces itself within seconds
            if "Running stage 'train'" in line:
                break
        time.sleep(3)  # the stage's Python is importing TensorFlow or fitting by now
        assert task.poll() is None, "train finished before it could be killed"
        os.killpg(task.pid, signal.SIGKILL)
    finally:
        task.wait(timeout=60)
    lock_after_kill = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock_after_kill["stages"]["train"] == lock_before["stages"]["train"]
    retry = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                           timeout=1800)  # fmt: skip
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    assert stages_run(retry.stdout) == ["train"]
    lock_after_retry = yaml.safe_load((project / "dvc.lock").read_text())
    assert (
        lock_after_retry["stages"]["train"]["params"]["params.yaml"]["train.seed"]
        == (params["train"]["seed"])
    )
    rest = dvc(project, "repro", env=env)
    assert rest.returncode == 0, rest.stderr[-3000:]
    status = dvc(project, "status", env=env)
    assert status.returncode == 0 and UP_TO_DATE in status.stdout
