"""A real part a test needs (a browser, its driver, a built frontend, a mount): under CI its
absence fails the test, naming what is missing, so a check that cannot run never passes as
a skip; elsewhere the test is skipped, naming the command that installs it."""

from __future__ import annotations

import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(present: bool, what: str, install: str) -> None:
    """Fail (under CI) or skip (elsewhere) unless `present`; usable at module level."""
    if present:
        return
    message = f"{what} is missing; install it with: {install}"
    if under_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)
