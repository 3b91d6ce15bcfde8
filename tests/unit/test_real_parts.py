"""A missing real part: the system-package step names the one command that installs it, and
under CI a test that needs it fails instead of being skipped."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from testkit.stack import ROOT

BROWSER_TESTS = "tests/integration/test_console_browser.py"


def _packages_script(tmp_path, line: str, *args: str) -> subprocess.CompletedProcess:
    listing = tmp_path / "packages.txt"
    listing.write_text(f"# probe  package  why\n{line}\n")
    env = {**os.environ, "SYSTEM_PACKAGES_LIST": str(listing)}
    return subprocess.run(
        [str(ROOT / "scripts" / "system-packages.sh"), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_missing_system_package_is_named_with_the_command_that_installs_it(tmp_path):
    checked = _packages_script(tmp_path, "no-such-tool-fraudops  fraudops-nothing  why", "--check")
    assert checked.returncode == 1
    assert "system packages missing: fraudops-nothing" in checked.stderr
    assert "apt-get install -y --no-install-recommends fraudops-nothing" in checked.stderr


def test_present_packages_install_nothing(tmp_path):
    checked = _packages_script(tmp_path, "bash  bash  this script")
    assert checked.returncode == 0, checked.stderr
    assert "all present" in checked.stdout


def _collect_browser_tests(ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": ci, "CHROMIUM_PATH": "/nonexistent/chromium"}
    collect = ["--collect-only", "-q", "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", BROWSER_TESTS, *collect],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_without_chromium_the_browser_tests_fail_under_ci_and_skip_elsewhere():
    failed = _collect_browser_tests("true")
    assert failed.returncode != 0
    assert "CI=true and Chromium (/nonexistent/chromium) is missing" in failed.stdout

    skipped = _collect_browser_tests("")
    assert skipped.returncode == 5, skipped.stdout  # nothing collected, nothing failed
    assert "Chromium (/nonexistent/chromium) is missing" in skipped.stdout
