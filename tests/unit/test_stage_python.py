"""training/python.sh, the interpreter of every dvc.yaml stage: it finds an environment
with the pipeline installed even when the caller's PATH has none (`.venv/bin/dvc repro`
from a shell where the environment is not activated), and prefers the one on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fraudops.pipeline_graph import load_stages

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "training" / "python.sh"
PIPELINE_ENV = Path(sys.prefix)  # the environment running these tests has the pipeline
SHELL = shutil.which("sh")
REPORT = "import sys; print(sys.executable); print(sys.argv[1:])"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder holding only the launcher (no .venv yet)."""
    (tmp_path / "project" / "training").mkdir(parents=True)
    shutil.copy2(LAUNCHER, tmp_path / "project" / "training" / "python.sh")
    return tmp_path / "project"


@pytest.fixture
def bare_path(tmp_path: Path) -> Path:
    """A PATH directory whose `python` lacks the pipeline (it fails whatever it is asked)."""
    directory = tmp_path / "bin"
    directory.mkdir()
    fake = directory / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    return directory


def launch(project: Path, path: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SHELL, "training/python.sh", "-c", REPORT, "two words", "x"],
        cwd=project,
        env={"PATH": str(path)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_falls_back_to_the_project_environment(project, bare_path):
    (project / ".venv").symlink_to(PIPELINE_ENV)
    result = launch(project, bare_path)
    assert result.returncode == 0, result.stderr
    executable, argv = result.stdout.splitlines()
    assert os.path.normpath(executable) == str(project / ".venv" / "bin" / "python")
    assert argv == "['two words', 'x']"


def test_prefers_the_environment_on_path(project):
    (project / ".venv").symlink_to(PIPELINE_ENV)
    result = launch(project, PIPELINE_ENV / "bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(PIPELINE_ENV / "bin" / "python")


def test_no_environment_is_a_clear_error(project, bare_path):
    result = launch(project, bare_path)
    assert result.returncode == 127
    assert "no Python with the pipeline installed" in result.stderr
    assert "make install" in result.stderr


@pytest.mark.parametrize("stage", load_stages(ROOT), ids=lambda s: s.name)
def test_every_stage_runs_through_the_launcher(stage):
    assert stage.cmd.startswith("sh training/python.sh -m "), stage.cmd
