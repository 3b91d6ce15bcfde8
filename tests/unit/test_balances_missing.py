"""Transactions without account balances (card payments): the one feature transform marks
them, batch and online agree, training's masking gives the same features, and the schema
and wire contract carry the flag."""

from __future__ import annotations

import numpy as np
import pytest

from fraudops.features import (
    BALANCE_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    batch_features,
    mask_balances,
)
from fraudops.proto_gen.fraud.v1 import fraud_pb2
from fraudops.schema import InvalidTransaction, proto_to_dict, validate_columns
from fraudops.schema import validate_transaction as validate
from serving.feature_state import MemoryFeatures
from testkit.transactions import make_transactions

PRESENT = FEATURE_NAMES.index("balances_present")
BALANCE = [FEATURE_NAMES.index(n) for n in BALANCE_FEATURES]


@pytest.fixture
def frame():
    df = make_transactions(200, seed=5).sort_values("timestamp", kind="stable")
    df = df.reset_index(drop=True)
    df["balances_missing"] = np.arange(len(df)) % 3 == 0
    return df


def test_missing_balances_zero_every_balance_feature_and_say_so(frame):
    x = batch_features(frame)
    missing = frame["balances_missing"].to_numpy()
    assert (x[missing][:, BALANCE] == 0).all() and (x[missing, PRESENT] == 0).all()
    assert (x[~missing, PRESENT] == 1).all()
    assert (x[~missing][:, BALANCE] != 0).any()


def test_a_dataset_without_the_column_has_every_balance(frame):
    x = batch_features(frame.drop(columns="balances_missing"))
    assert (x[:, PRESENT] == 1).all()


def test_training_mask_equals_the_transform_of_missing_rows(frame):
    missing = frame["balances_missing"].to_numpy()
    present = batch_features(frame.assign(balances_missing=False))
    np.testing.assert_array_equal(mask_balances(present, missing), batch_features(frame))


def test_online_reproduces_batch_with_missing_balances(frame):
    online = MemoryFeatures()
    rows = np.vstack([online.transform(r) for r in frame.to_dict("records")])
    np.testing.assert_allclose(rows, batch_features(frame), rtol=1e-5, atol=1e-5)


def test_the_flag_travels_on_the_wire_and_defaults_to_present():
    old = fraud_pb2.TransactionRequest(transaction_id="t", amount=5.0)
    assert proto_to_dict(old)["balances_missing"] is False
    card = fraud_pb2.TransactionRequest(
        transaction_id="t", balances_missing=True, stripe_payment_intent_id="pi_1"
    )
    again = proto_to_dict(fraud_pb2.TransactionRequest.FromString(card.SerializeToString()))
    assert again["balances_missing"] is True
    assert again["stripe_payment_intent_id"] == "pi_1"


def _valid(**fields):
    tx = proto_to_dict(
        fraud_pb2.TransactionRequest(
            transaction_id="t1", user_id=7, amount=10.0, timestamp=1_700_000_000, type="PAYMENT"
        )
    )
    return {**tx, **fields}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("balances_missing", 1),
        ("stripe_charge_id", "ch_" + "x" * 70),
        ("stripe_customer_id", "cus_\x00"),
        ("stripe_payment_intent_id", 5),
    ],
)
def test_bad_stripe_fields_are_named_row_by_row_and_in_batches(field, value):
    with pytest.raises(InvalidTransaction) as err:
        validate(_valid(**{field: value}))
    assert err.value.field == field
    rows = [_valid(), _valid(**{field: value})]
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    assert [(i, e.field) for i, e in validate_columns(cols)] == [(1, field)]


def test_live_labels_without_balances_train_as_unknown_balances(tmp_path, frame):
    from training.featurize import feedback_set

    live = frame.head(6).assign(label="FRAUD", balances_missing=[True, False] * 3)
    live.to_parquet(tmp_path / "labels.parquet")
    weights = {"feedback_weight": 5.0, "delayed_weight": 5.0}
    features, window = feedback_set(tmp_path / "labels.parquet", weights)
    assert window["count"] == 6
    assert features["balances_present"].tolist() == [0.0, 1.0] * 3


def test_reasons_never_cite_balances_a_payment_did_not_have(frame):
    from fraudops.bands import Explainer

    x = batch_features(frame)
    n = x.shape[1]
    weight = np.full(n, 0.01)
    weight[BALANCE] = -50.0  # low (zeroed) balances would dominate every reason
    explainer = Explainer({"mean": x.mean(axis=0).tolist(), "std": [1.0] * n,
                           "weight": weight.tolist()})  # fmt: skip
    missing = frame["balances_missing"].to_numpy()
    balance_labels = {f.label for f in FEATURES if f.balance_derived}
    cited = [{r.rsplit(" (", 1)[0] for r in rs} for rs in explainer.reasons(x)]
    assert not any(c & balance_labels for c, m in zip(cited, missing, strict=True) if m)
    assert any(c & balance_labels for c, m in zip(cited, missing, strict=True) if not m)
