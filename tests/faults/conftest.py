"""Fixtures of the fault suite: services of a test's own, a stream of transactions sent
while the fault happens, and the figures each case reports.

- `private_stack`: a `PrivateStack` whose Kafka, Postgres and Redis (the dev stack's own
  records, `devstack`) run on free loopback ports under a throwaway run
  directory, so a test can stop and restart them; the shared services are never touched.
  Everything it started is stopped when the test ends.
- `fault_report`: `fault_report(fault, sent=..., scored=..., lost=..., twice=...,
  recovery_s=...)` records one row of the suite's table; the table is printed at the end
  of the session (`pytest tests/faults -s` or the terminal summary).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.support import PrivateStack

_REPORT: list[dict] = []


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    """Run outside pytest's temporary directories (a concurrent pytest session resets their
    root to mode 700, which would lock the postgres user out of its data directory); the
    services' logs are kept in the test's temporary directory."""
    run_dir = Path(tempfile.mkdtemp(prefix="fraudops-faults-"))
    stack = PrivateStack(run_dir / "run")
    try:
        yield stack
    finally:
        stack.close()
        shutil.copytree(run_dir / "run" / "logs", tmp_path / "service-logs", dirs_exist_ok=True)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def fault_report() -> Callable[..., None]:
    def record(fault: str, **figures) -> None:
        _REPORT.append({"fault": fault, **figures})

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _REPORT:
        return
    columns = ("sent", "scored", "lost", "twice", "recovery_s", "note")
    terminalreporter.section("fault suite")
    terminalreporter.write_line("| fault | " + " | ".join(columns) + " |")
    for row in _REPORT:
        cells = [_cell(row.get(c, "")) for c in columns]
        terminalreporter.write_line(f"| {row['fault']} | " + " | ".join(cells) + " |")


def _cell(value) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)
