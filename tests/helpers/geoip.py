"""The real IP country database the install step places (`make geoip-db`): tests read its
records, never a stand-in. Missing: under CI the test fails, elsewhere it is skipped."""

from __future__ import annotations

import pytest

from fraudops.geoip import GeoIpDatabase
from testkit.stack import GEOIP_DB
from tests.helpers.real_parts import require

__all__ = ["GEOIP_DB", "geoip_database"]  # GEOIP_DB: shared with the benchmark


@pytest.fixture(scope="session")
def geoip_database() -> GeoIpDatabase:
    require(GEOIP_DB.exists(), f"the IP country database ({GEOIP_DB})", "make geoip-db")
    return GeoIpDatabase(GEOIP_DB)
