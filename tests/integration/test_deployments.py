"""model_deployments says which processes serve which version: a process that died without
closing its row (SIGKILL, OOM) must not seem to serve forever. The next process on the host
that records a swap closes the rows of dead processes, and leaves the living ones open."""

from __future__ import annotations

import socket
import subprocess
import sys

from serving.model_store import load_model
from serving.persistence import DeploymentRecorder
from tests.helpers.serving_env import publish_model, query


def _open_row(database_url: str, version: str, pid: int) -> None:
    query(
        database_url,
        "INSERT INTO model_deployments (version, host, pid, served_from) "
        "VALUES (%s, %s, %s, now() - interval '1 hour') RETURNING id",
        (version, socket.gethostname(), pid),
    )


def _is_open(database_url: str, pid: int) -> bool:
    rows = query(
        database_url,
        "SELECT count(*) FROM model_deployments WHERE host = %s AND pid = %s "
        "AND served_until IS NULL",
        (socket.gethostname(), pid),
    )
    return rows[0][0] > 0


def test_a_swap_closes_the_rows_of_dead_processes_on_this_host(
    built_models, serving_root, database_url
):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    living = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _open_row(database_url, "v0-dead", dead_pid)
        _open_row(database_url, "v0-living", living.pid)
        published = publish_model(built_models, serving_root, "v1")
        DeploymentRecorder(database_url, "test").reload(None, load_model(published), "startup")
        assert not _is_open(database_url, dead_pid)
        assert _is_open(database_url, living.pid)
    finally:
        living.kill()
        living.wait()
