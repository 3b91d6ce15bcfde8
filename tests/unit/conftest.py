"""The quick tier: nothing here may start a service or import TensorFlow."""

import sys

import pytest

HEAVY = ("tensorflow", "keras", "torch")


@pytest.fixture(autouse=True)
def _no_heavy_imports():
    yield
    loaded = sorted(name for name in HEAVY if name in sys.modules)
    assert not loaded, f"a unit test imported {loaded}: move it to tests/pipeline"
