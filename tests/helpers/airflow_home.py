"""Real Airflow for the DAG tests: a DAG file of dags/ parsed by Airflow's DagBag
(`load_dag`), the CLI against a private home whose SQLite metadata holds only the DAG
files a test copies in (`AirflowHome`), and the events an asset got (`asset_events`)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

AIRFLOW = Path(sys.executable).with_name("airflow")


def load_dag(project_root: Path, dag_id: str):
    """dags/<dag_id>.py parsed by DagBag with no import error; the DAG. The caller points
    AIRFLOW_HOME at a directory of its own first (Airflow reads it at import)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(project_root / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def asset_events(home: Path, uri: str) -> list[dict]:
    """The extras of the asset's events, from the home's own metadata database."""
    with closing(sqlite3.connect(home / "airflow.db")) as conn:
        rows = conn.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
            " WHERE a.uri = ? ORDER BY e.id",
            (uri,),
        ).fetchall()
    return [json.loads(extra) for (extra,) in rows]


class AirflowHome:
    """A private AIRFLOW_HOME holding copies of `dag_files` in its dags folder, its metadata
    migrated; `run` the real airflow CLI there with `env` over this process's environment."""

    def __init__(self, home: Path, dag_files: Iterable[Path], **env: str):
        (home / "dags").mkdir(parents=True)
        for dag_file in dag_files:
            shutil.copy(dag_file, home / "dags")
        self.home = home
        self.env = {
            **os.environ,
            **env,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
        self.run("db", "migrate")

    def run(self, *command: str) -> str:
        """One airflow command, which must succeed; what it printed (stdout, then stderr)."""
        done = subprocess.run(
            [str(AIRFLOW), *command], env=self.env, cwd=self.home, capture_output=True,
            text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    def asset_events(self, uri: str) -> list[dict]:
        return asset_events(self.home, uri)
