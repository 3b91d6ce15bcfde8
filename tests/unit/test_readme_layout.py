"""README's "What is where" table says what each part of the tree is: every top-level folder
and every package one level down has a row (a package may instead be named in its parent's
row), and every path the table names exists. A folder added or moved without its row, or a
row left behind by a move, fails here."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def table() -> dict[str, str]:
    """Each path the first column names -> the rest of its row."""
    section = (ROOT / "README.md").read_text().split("## What is where", 1)[1]
    rows = {}
    for line in section.split("\n## ", 1)[0].splitlines():
        if line.startswith("| `"):
            first, rest = line[2:].split(" | ", 1)
            rows.update((path, rest) for path in re.findall(r"`([^`]+)`", first))
    return rows


def tracked_dirs() -> set[str]:
    """Every folder that holds a tracked file (git-ignored build output is not the tree)."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {str(Path(f).parent) for f in files} - {"."}


def test_every_path_the_table_names_exists():
    missing = [path for path in table() if not (ROOT / path).exists()]
    assert not missing, f"README's table names what the tree does not hold: {missing}"


def test_every_top_level_folder_has_a_row():
    top = {d.split("/")[0] for d in tracked_dirs()}
    covered = {path.split("/")[0] for path in table()}
    assert top <= covered, f"top-level folders without a row in README: {sorted(top - covered)}"


def named(package: str, rows: dict[str, str]) -> bool:
    """Whether `parent/name` has a row, or its parent's row names `name/`."""
    parent, name = package.split("/")
    return f"{package}/" in rows or f"`{name}/`" in rows.get(f"{parent}/", "")


def test_every_package_one_level_down_has_a_row_or_is_named_in_its_parents():
    rows = table()
    packages = {
        d for d in tracked_dirs() if d.count("/") == 1 and (ROOT / d / "__init__.py").exists()
    }
    unnamed = sorted(d for d in packages if not named(d, rows))
    assert not unnamed, f"packages without a row in README (nor in their parent's): {unnamed}"
