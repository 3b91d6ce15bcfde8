"""Each dvc.yaml stage lists, in its deps, exactly the project code its command runs.

DVC re-runs a stage only when one of its deps changes, so a module the stage imports but
does not list (the schema, the feature transform) could change the stage's output while
`dvc repro` runs nothing; a listed module it does not import re-runs it for nothing. The
imports are read statically with `ast` (lazy imports inside functions included), so no
stage code, and no TensorFlow, is imported here."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest

from fraudops.pipeline_graph import Stage, load_stages

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fraudops", "training", "feature_checks", "serving", "jobs")
STAGES = load_stages(ROOT)


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name; None when it is not project code (a
    third-party module, or a name imported from a module rather than a module)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` names, with a relative import resolved."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    parent = parts[: len(parts) - node.level + 1]
    return ".".join([*parent, node.module] if node.module else parent)


def imported_names(path: Path, name: str) -> set[str]:
    """Every dotted name the module imports anywhere in its body, with their parent
    packages (importing a.b.c runs a and a.b too); `from m import x` yields m and m.x."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    parts = [name.split(".") for name in names]
    return {".".join(p[:i]) for p in parts for i in range(1, len(p) + 1)}


def project_imports(entry: str) -> dict[str, Path]:
    """The project modules `python -m entry` loads, transitively: name -> file."""
    found: dict[str, Path] = {}
    pending = [entry]
    while pending:
        name = pending.pop()
        path = module_file(name)
        if name in found or path is None:
            continue
        found[name] = path
        pending.extend(imported_names(path, name))
    return found


def stage_modules(stage: Stage) -> list[str]:
    """The modules the stage's command runs with `-m` (its interpreter may be any
    launcher: the module after `-m` is what runs)."""
    words = shlex.split(stage.cmd)
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-m"]


def is_package_marker(path: Path) -> bool:
    """A package __init__ holding only its docstring: nothing in it can change an output."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def covers(dep: str, path: str) -> bool:
    """A dep covers a file when it is the file or a directory holding it."""
    return path == dep or path.startswith(dep + "/")


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def code_files(stage: Stage) -> dict[str, str]:
    """Project file -> module name, for every module the stage's command loads."""
    files = {}
    for entry in stage_modules(stage):
        files.update({relative(p): name for name, p in project_imports(entry).items()})
    return files


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_stage_runs_a_project_module(stage):
    modules = stage_modules(stage)
    assert modules, f"stage {stage.name}: no `-m module` in its cmd {stage.cmd!r}"
    for name in modules:
        assert module_file(name), f"stage {stage.name}: runs {name}, not a project module"


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_imported_project_module_is_a_dep(stage):
    missing = [
        f"{name} ({path})"
        for path, name in sorted(code_files(stage).items())
        if not is_package_marker(ROOT / path) and not any(covers(d, path) for d in stage.deps)
    ]
    assert not missing, f"stage {stage.name}: imports, but does not list in deps: {missing}"


def named_by(dep: str, files: dict[str, str]) -> bool:
    """A file the stage's code loads by path (e.g. the MLflow models-from-code entry) is
    named in the source of a module it imports."""
    name = dep.rsplit("/", 1)[-1]
    return dep.endswith(".py") and any(name in (ROOT / path).read_text() for path in files)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_code_dep_is_imported(stage):
    files = code_files(stage)
    stale = [
        dep
        for dep in stage.deps
        if dep.split("/")[0] in PACKAGES
        and not any(covers(dep, path) for path in files)
        and not named_by(dep, files)
    ]
    assert not stale, f"stage {stage.name}: lists code it never imports: {stale}"


def test_the_walk_sees_lazy_and_transitive_imports():
    """train imports training.lib.model inside a function, and fraudops.features through
    training.featurize: both must be found."""
    found = project_imports("training.train")
    assert {"training.lib.model", "training.featurize", "fraudops.features"} <= set(found)
    assert "tensorflow" not in found


def test_pipeline_test_projects_copy_every_package_a_stage_imports():
    """The pipeline tests run `dvc repro` in a copy of the project: a package a stage
    imports but the copy lacks fails there with a missing dep."""
    from testkit.pipeline_project import COPIED

    needed = {dep.split("/")[0] for stage in STAGES for dep in stage.deps}
    assert needed & set(PACKAGES) <= set(COPIED)
