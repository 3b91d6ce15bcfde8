"""IP enrichment on the real country database: public IPv4 and IPv6 records, private and
reserved ranges (no country, their own kind), the install step's check-and-place, the hot
swap of a replaced file, the keyed hash and the masking of addresses in logs."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from fraudops.bands import describe_location, location_reasons
from fraudops.geoip import UNKNOWN, GeoIpDatabase, IpInfo, enrich_columns, install, ip_hash
from fraudops.pii import mask_pii
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.schema import proto_to_dict, validate_transaction
from serving.geoip_store import GeoIpStore
from testkit.stack import wait_until
from tests.helpers.geoip import GEOIP_DB

# Addresses whose country is stable in the registries' data (the operators' home ranges).
PUBLIC = [
    ("8.8.8.8", "US"),
    ("81.2.69.160", "GB"),
    ("200.160.0.8", "BR"),
    ("2001:4860:4860::8888", "US"),
    ("2a00:1450:4001::1", "IE"),
    ("::ffff:81.2.69.160", "GB"),  # IPv4-mapped: judged as its IPv4 address
]
NOT_ROUTED = [
    ("10.0.0.1", "private"),
    ("192.168.1.1", "private"),  # the database itself places 192.168/16 in AU: not trusted
    ("172.16.5.4", "private"),
    ("127.0.0.1", "private"),
    ("100.64.0.1", "private"),
    ("169.254.1.1", "private"),
    ("fc00::1", "private"),
    ("fe80::1", "private"),
    ("::1", "private"),
    ("224.0.0.1", "reserved"),
    ("240.0.0.1", "reserved"),
    ("0.0.0.0", "reserved"),
    ("ff02::1", "reserved"),
    ("::", "reserved"),
]


@pytest.mark.parametrize(("ip", "country"), PUBLIC)
def test_public_addresses_get_their_country(geoip_database, ip, country):
    assert geoip_database.lookup(ip) == IpInfo(country, "public")


@pytest.mark.parametrize(("ip", "kind"), NOT_ROUTED)
def test_private_and_reserved_ranges_have_no_country(geoip_database, ip, kind):
    assert geoip_database.lookup(ip) == IpInfo("", kind)


def test_unknown_is_a_value_not_an_error(geoip_database):
    assert geoip_database.lookup("") == UNKNOWN
    cols = enrich_columns(["8.8.8.8", "", "10.1.2.3", None], geoip_database)
    assert cols == {
        "ip_country": ["US", "", "", ""],
        "ip_kind": ["public", "unknown", "private", "unknown"],
    }
    assert enrich_columns(["8.8.8.8"], None) == {"ip_country": [""], "ip_kind": ["unknown"]}


def test_an_older_producer_without_location_fields_still_validates():
    old = fraud_pb2.TransactionRequest(
        transaction_id="t1", user_id=5, amount=10.0, timestamp=1_704_067_200, type="PAYMENT"
    )
    tx = proto_to_dict(old)
    assert (tx["ip_address"], tx["card_country"], tx["billing_country"]) == ("", "", "")
    validate_transaction(tx)


def test_install_checks_records_and_places_the_file(tmp_path):
    dest = tmp_path / "db" / "country.mmdb"
    record = install(GEOIP_DB, dest, "@scope/pkg", "1.2.3")
    sidecar = json.loads((tmp_path / "db" / "country.mmdb.json").read_text())
    assert sidecar["package"] == "@scope/pkg" and sidecar["version"] == "1.2.3"
    assert sidecar["built"] == record.built and len(sidecar["sha256"]) == 64
    assert GeoIpDatabase(dest).version == record
    assert not [p.name for p in dest.parent.iterdir() if p.name.startswith(".tmp")]


def test_install_refuses_a_file_that_is_no_country_database(tmp_path):
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(Exception):  # noqa: B017 (the reader's own error type)
        install(bad, tmp_path / "out.mmdb", "p", "1")
    assert not (tmp_path / "out.mmdb").exists()


def test_a_replaced_file_is_swapped_in_and_a_bad_one_rejected(tmp_path):
    path = tmp_path / "geoip" / "country.mmdb"
    install(GEOIP_DB, path, "pkg", "1")
    store = GeoIpStore(path, debounce_seconds=0.05)
    store.start_watching()
    try:
        first, before = store.current, store.located
        assert first is not None and first.version.version == "1"
        bad = path.with_name(".tmp-bad")
        bad.write_bytes(b"\0" * 4096)
        os.replace(bad, path)  # what a broken copy looks like: renamed over the good file
        install(GEOIP_DB, tmp_path / "other.mmdb", "pkg", "2")  # a good file, on the side
        assert store.current is first  # rejected (checked on the watcher's thread) or pending
        shutil.copyfile(tmp_path / "other.mmdb.json", path.with_name(path.name + ".json"))
        os.replace(tmp_path / "other.mmdb", path)
        wait_until(lambda: store.current.version.version == "2", "the new database", 10)
        assert store.current.lookup("8.8.8.8") == IpInfo("US", "public")
        assert store.located is not before  # the cached answers go with the old file
        assert store.located("8.8.8.8") == (IpInfo("US", "public"), "")
    finally:
        store.stop()


def test_no_database_means_every_address_unknown(tmp_path):
    store = GeoIpStore(tmp_path / "absent.mmdb")
    assert store.load() is False and store.current is None and store.version == "none"
    assert store.located is None  # nothing to look up, nothing to hash
    hashing = GeoIpStore(tmp_path / "absent.mmdb", hash_key="k1")
    assert hashing.located("8.8.8.8") == (UNKNOWN, ip_hash("8.8.8.8", "k1"))


def test_the_store_answers_an_address_with_its_keyed_hash(geoip_database):
    store = GeoIpStore(GEOIP_DB, hash_key="k1")
    assert store.load()
    assert store.located("8.8.8.8") == (IpInfo("US", "public"), ip_hash("8.8.8.8", "k1"))
    assert store.located("192.168.1.1") == (IpInfo("", "private"), ip_hash("192.168.1.1", "k1"))


def test_the_keyed_hash_groups_one_address_and_needs_the_key():
    assert ip_hash("2001:DB8::1", "k1") == ip_hash("2001:db8:0::1", "k1")
    assert ip_hash("81.2.69.160", "k1") != ip_hash("81.2.69.160", "k2")
    assert ip_hash("81.2.69.160", "k1") != ip_hash("81.2.69.161", "k1")
    assert ip_hash("", "k1") == "" and len(ip_hash("8.8.8.8", "k1")) == 32


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("paid from 81.2.69.160 today", "paid from [IP] today"),
        ("paid from 2a00:1450:4001::1, declined", "paid from [IP], declined"),
        ("client=10.0.0.7", "client=[IP]"),
        ("broker 127.0.0.1:29092 at 12:30:45.123", "broker 127.0.0.1:29092 at 12:30:45.123"),
        ("version 2.3.2026061719 of 1.2.3", "version 2.3.2026061719 of 1.2.3"),
    ],
)
def test_addresses_are_masked_in_logs(line, masked):
    assert mask_pii(line) == masked


def test_a_location_reason_says_where_the_payment_and_the_card_are_from():
    reasons = [["IP country differs from the card's (+2.1)", "amount (+1.0)",
                "IP country new for this user (+0.7)"], ["amount (+1.0)"]]  # fmt: skip
    txs = [{"ip_country": "BR", "ip_kind": "public", "card_country": "DE"}, {}]
    assert location_reasons(reasons, txs) == [
        ["IP country BR, card issued in DE (+2.1)", "amount (+1.0)"], ["amount (+1.0)"]
    ]  # fmt: skip
    assert describe_location({"ip_kind": "private"}) == "IP address private"
