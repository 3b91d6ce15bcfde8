"""The simulator's locations (training.lib.locations) on the real country database: homes,
travel and fraud from abroad, as enrichment derives them; the shares the synthesizer fits
back from such a dataset; a PaySim-style dataset without addresses stays unknown; an
address drawn for a country and kind is enriched back to them."""

from __future__ import annotations

import numpy as np
import pytest

from fraudops.features import FEATURE_NAMES, batch_features
from fraudops.geoip import enrich_columns
from fraudops.schema import LOCATION_DATA_COLUMNS, TRANSACTION_COLUMNS
from training.lib.locations import (
    LocationMix,
    add_locations,
    addresses,
    country_networks,
    fit_mix,
    frame_addresses,
)
from training.lib.simulator import SimConfig, simulate


@pytest.fixture(scope="module")
def located(geoip_database):
    cfg = SimConfig(n_users=1500, n_steps=96, start=1_704_067_200, tx_per_user_day=3.0,
                    ato_rate=0.02, card_testing_rate=0.02, seed=5)  # fmt: skip
    return add_locations(simulate(cfg), geoip_database, np.random.default_rng(2))


def test_columns_are_derived_values_before_the_label(located):
    assert list(located.columns) == [*TRANSACTION_COLUMNS[:-1], *LOCATION_DATA_COLUMNS,
                                     "is_fraud"]  # fmt: skip
    assert set(located["ip_kind"]) == {"public", "private", "unknown"}
    assert (located.loc[located["ip_kind"] != "public", "ip_country"] == "").all()


def test_fraud_comes_from_abroad_and_legit_from_home(located):
    mix = fit_mix(located)
    assert mix is not None
    assert mix.fraud_abroad > 0.5 > 0.1 > mix.legit_travel
    assert mix.legit_unknown == pytest.approx(LocationMix().legit_unknown, abs=0.02)
    homes = {"US", "DE", "GB", "FR", "BR", "IN", "JP", "ES", "NG"}
    assert sum(v for c, v in mix.homes.items() if c in homes) > 0.95  # travellers aside


def test_location_features_separate_the_classes(located):
    x = batch_features(located)
    new = x[:, FEATURE_NAMES.index("ip_country_new")]
    fraud = located["is_fraud"].to_numpy() == 1
    assert new[fraud].mean() > 3 * new[~fraud].mean()


def test_a_dataset_without_addresses_has_no_location_to_fit(located):
    assert fit_mix(located[list(TRANSACTION_COLUMNS)]) is None
    x = batch_features(located[list(TRANSACTION_COLUMNS)])
    assert not x[:, FEATURE_NAMES.index("ip_country_known")].any()


def test_an_address_is_enriched_back_to_its_country_and_kind(geoip_database):
    rng = np.random.default_rng(0)
    nets = country_networks(geoip_database, ("DE", "JP", "NG"), rng)
    countries = ["DE", "JP", "NG", "", "", "", "DE"]
    kinds = ["public", "public", "public", "private", "reserved", "unknown", "public"]
    ips = addresses(nets, countries, rng, kinds)
    assert ips[5] == "" and ips[0] != ips[6]
    assert enrich_columns(ips.tolist(), geoip_database) == {
        "ip_country": countries, "ip_kind": kinds,
    }  # fmt: skip


def test_a_located_dataset_gets_addresses_that_reproduce_its_location(located, geoip_database):
    ips = frame_addresses(located, geoip_database, np.random.default_rng(1))
    enriched = enrich_columns(ips.tolist(), geoip_database)
    assert enriched["ip_country"] == located["ip_country"].tolist()
    assert enriched["ip_kind"] == located["ip_kind"].tolist()
