"""The real IP country database the install step places (`make geoip-db`): tests read its
records, never a stand-in. Missing: under CI the test fails, elsewhere it is skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudops.geoip import GeoIpDatabase
from fraudops.settings import Settings
from tests.helpers.real_parts import require
from tests.helpers.stack import ROOT

GEOIP_DB: Path = ROOT / Settings().geoip_db


@pytest.fixture(scope="session")
def geoip_database() -> GeoIpDatabase:
    require(GEOIP_DB.exists(), f"the IP country database ({GEOIP_DB})", "make geoip-db")
    return GeoIpDatabase(GEOIP_DB)
