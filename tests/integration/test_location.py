"""Location through the real server: a transaction's IP address is enriched from the real
country database and stored only as its country, its kind and a keyed hash (never the
address); an older producer's transaction (no location fields) is scored and stored with
location unknown."""

from __future__ import annotations

import pytest

from fraudops.geoip import ip_hash
from fraudops.proto_gen.fraud.v1 import fraud_pb2_grpc
from serving.server import ServingApp
from tests.helpers.geoip import GEOIP_DB
from tests.helpers.serving_env import (
    channel_to,
    make_settings,
    publish_model,
    query,
    transaction,
    unique_ids,
    wait_serving,
    wait_until,
)

KEY = "test-ip-hash-key"
ROW = (
    "SELECT transaction_id, ip_country, ip_kind, card_country, billing_country, ip_hash, "
    "s::text FROM scored_transactions s WHERE transaction_id = ANY(%s)"
)


@pytest.fixture
def app(built_models, serving_root, kafka_settings, kafka_topics, database_url, geoip_database):
    publish_model(built_models, serving_root, "v1")
    settings = make_settings(
        **kafka_settings.kafka_login(), database_url=database_url, model_dir=serving_root,
        geoip_db=GEOIP_DB, ip_hash_key=KEY, **kafka_topics(),
    )  # fmt: skip
    server = ServingApp(settings, max_workers=4)
    server.start()
    yield server
    server.stop(grace=2)


def test_the_address_is_stored_as_country_kind_and_keyed_hash_only(app, client_token):
    ids = unique_ids("loc", 3)
    sent = [
        transaction(0, transaction_id=ids[0], ip_address="81.2.69.160", card_country="DE",
                    billing_country="DE"),
        transaction(1, transaction_id=ids[1], ip_address="2a00:1450:4001::1"),
        transaction(2, transaction_id=ids[2]),  # an older producer: no location fields
    ]  # fmt: skip
    with channel_to(app.port, client_token) as channel:
        wait_serving(channel)
        stub = fraud_pb2_grpc.FraudScoringStub(channel)
        assert all(stub.Score(tx, timeout=10).model_version == "v1" for tx in sent)
    url = app.settings.database_url
    wait_until(lambda: len(query(url, ROW, (ids,))) == 3, "the scored rows in Postgres")
    rows = {r[0]: r[1:] for r in query(url, ROW, (ids,))}
    assert rows[ids[0]][:5] == ("GB", "public", "DE", "DE", ip_hash("81.2.69.160", KEY))
    assert rows[ids[1]][:5] == ("IE", "public", None, None, ip_hash("2a00:1450:4001::1", KEY))
    assert rows[ids[2]][:5] == (None, None, None, None, None)  # unknown
    for address in ("81.2.69.160", "2a00:1450:4001"):
        assert not any(address in r[5] for r in rows.values())  # the whole row, as text
