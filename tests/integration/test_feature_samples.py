"""The scorer and the Stripe decide endpoint keep the feature vectors they scored with for
a sample of transactions, and the drift watch's skew check, recomputing them with the
batch transform over each user's history, finds them equal: online and batch features
agree on real traffic, whichever door it came in by, its location features included (the
scorer enriches each address; the watch reads back the location it stored)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fraudops.db import connect
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from integrations.stripe.app import create_app
from jobs.drift_watch import read_samples, read_window, skew_check, window_features
from testkit.stack import GEOIP_DB, fresh_database
from testkit.transactions import make_transactions
from tests.helpers.serving_env import (
    make_settings,
    publish_model,
    query,
    scored_ids,
    service_process,
    wait_until,
)
from tests.helpers.stripe_events import payment_intent
from tests.integration.test_scorer import produce_raw
from training.lib.locations import add_locations, frame_addresses

pytestmark = pytest.mark.slow


def _requests(n: int, geoip_database) -> list[fraud_pb2.TransactionRequest]:
    """Toy transactions of few users over two days, in time order, ids in that order, each
    from an address of a simulated location (home, abroad, private or none) and a card."""
    rng = np.random.default_rng(5)
    frame = add_locations(make_transactions(n, seed=5, days=2), geoip_database, rng)
    ips = frame_addresses(frame, geoip_database, rng)
    run = uuid.uuid4().hex[:8]
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        out.append(
            fraud_pb2.TransactionRequest(
                transaction_id=f"skew-{run}-{i:06d}", user_id=int(row.user_id),
                amount=float(row.amount), timestamp=int(row.timestamp), type=row.type,
                old_balance_orig=float(row.old_balance_orig),
                new_balance_orig=float(row.new_balance_orig),
                old_balance_dest=float(row.old_balance_dest),
                new_balance_dest=float(row.new_balance_dest),
                is_unauthorized_overdraft=float(row.is_unauthorized_overdraft),
                ip_address=ips[i], card_country=row.card_country,
            )
        )  # fmt: skip
    return out


def test_the_scorers_sampled_features_match_the_batch_transform(
    built_models, serving_root, kafka_settings, kafka_topics, postgres_server_url, tmp_path,
    geoip_database,
):  # fmt: skip
    publish_model(built_models, serving_root, "v1")
    requests = _requests(400, geoip_database)
    ids = [r.transaction_id for r in requests]
    with fresh_database(postgres_server_url, "skew") as url:
        settings = make_settings(
            **kafka_settings.kafka_login(), database_url=url, model_dir=serving_root,
            consumer_group=f"test-skew-{uuid.uuid4().hex[:8]}", feature_sample_rate=1.0,
            geoip_db=GEOIP_DB, **kafka_topics(),
        )  # fmt: skip
        produce_raw(settings, [(str(r.user_id).encode(), r.SerializeToString()) for r in requests])
        with service_process("serving.scorer", settings, tmp_path / "scorer.log"):
            wait_until(lambda: len(scored_ids(url, ids)) == len(ids), "all scores stored", 120)
            wait_until(
                lambda: query(url, "SELECT count(*) FROM feature_samples")[0][0] == len(ids),
                "every feature vector sampled",
                60,
            )
        result = _skew(url)
        located = query(url, "SELECT count(*) FROM scored_transactions WHERE ip_country <> ''")
    assert located[0][0] > len(ids) // 2  # the scorer enriched the addresses
    assert result["checked"] == len(ids)
    assert result["mismatches"] == 0, result["examples"]


def _skew(url: str) -> dict:
    """The drift watch's skew check over the last hour's scores."""
    now = datetime.now(UTC)
    conn = connect(url)
    try:
        start, end = now - timedelta(hours=1), now + timedelta(minutes=1)
        live, features = window_features(read_window(conn, start, end))
        return skew_check(live, features, read_samples(conn, start, end), 1e-4)
    finally:
        conn.close()


def test_stripe_decisions_are_sampled_and_match_the_batch_transform(
    built_models, serving_root, kafka_settings, kafka_topics, postgres_server_url
):
    publish_model(built_models, serving_root, "v1")
    customers = [f"cus_skew_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    start = int(time.time()) - 3600
    intents = [
        payment_intent(amount=500 + 731 * i, customer=customers[i % 3], created=start + 97 * i)
        for i in range(30)
    ]
    ids = [pi["id"] for pi in intents]
    with fresh_database(postgres_server_url, "skew") as url:
        settings = make_settings(
            **kafka_settings.kafka_login(), database_url=url, model_dir=serving_root,
            feature_sample_rate=1.0, stripe_decide_api_key="key", **kafka_topics(),
        )  # fmt: skip
        with TestClient(create_app(settings)) as client:
            for pi in intents:
                answer = client.post("/stripe/decide", json=pi, headers={"X-Api-Key": "key"})
                assert answer.status_code == 200, answer.text
        # Leaving the client stops the app, which drains its sink.
        assert len(scored_ids(url, ids)) == len(ids)
        samples = query(url, "SELECT transaction_id FROM feature_samples")
        assert sorted(r[0] for r in samples) == sorted(ids)
        result = _skew(url)
    assert result["checked"] == len(ids)
    assert result["mismatches"] == 0, result["examples"]
