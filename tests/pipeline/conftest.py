"""Fixtures of the pipeline tier.

- `repro`: a tiny project after one full `dvc repro` (real MLflow server, no database), as
  (project, env, the run's output). One per session: the whole pipeline takes minutes, and
  the tests of `dvc repro` itself and the replay through the live loop both start from it.
  Tests of `dvc repro` change its params and re-run stages; a later reader finds a trained
  project whose newest published model and held-out set still belong together.
"""

from __future__ import annotations

import uuid

import pytest

from testkit.pipeline_project import dvc, make_project, pipeline_env


@pytest.fixture(scope="session")
def repro(tmp_path_factory: pytest.TempPathFactory, mlflow_tracking_uri: str):
    tag = uuid.uuid4().hex[:8]
    overrides = {
        "train": {"experiment": f"test-repro-{tag}"},
        "promote": {"registered_model": f"fraud-detector-repro-{tag}"},
    }
    project = make_project(tmp_path_factory.mktemp("repro") / "project", overrides)
    env = pipeline_env(MLFLOW_TRACKING_URI=mlflow_tracking_uri, DATABASE_URL=None)
    first = dvc(project, "repro", env=env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    return project, env, first.stdout
