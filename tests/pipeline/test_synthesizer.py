"""fit_synthesizer + generate on a tiny simulated reference, with real SDV: the requested
rows and fraud rate, the data contract, determinism, save/load, and that the fraud patterns
and velocity structure survive synthesis."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from fraudops.features import FEATURE_NAMES, batch_features
from fraudops.schema import BALANCE_COLUMNS, TRANSACTION_COLUMNS, TRANSACTION_TYPES
from training import fit_synthesizer as fit_stage
from training import generate as generate_stage
from training.generate import generate
from training.lib.simulator import SimConfig, simulate
from training.synthesizer.bundle import load_bundle, save_bundle
from training.synthesizer.representation import decode_rows, encode_rows
from training.synthesizer.sequencer import find_episodes

FIT_PARAMS = {
    "seed": 5,
    "max_rows": 3000,
    "min_segment_rows": 20,
    "legit_distribution": "truncnorm",
    "fraud_distribution": "gaussian_kde",
    "episode_gap_seconds": 1800,
    "max_templates": 2000,
    "quality_rows": 500,
}
N_ROWS, FRAUD_RATE = 4000, 0.05


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    cfg = SimConfig(n_users=800, n_steps=96, start=1_704_067_200, tx_per_user_day=2.0,
                    ato_rate=0.01, card_testing_rate=0.01, seed=11)  # fmt: skip
    return simulate(cfg)


@pytest.fixture(scope="module")
def fitted(reference):
    return fit_stage.fit_synthesizer(reference, FIT_PARAMS)


@pytest.fixture(scope="module")
def synthetic(fitted) -> pd.DataFrame:
    return generate(fitted[0], N_ROWS, FRAUD_RATE, seed=3, chunk_rows=1000)


def test_representation_round_trips_the_simulator_rows(reference):
    rep = encode_rows(reference, np.random.default_rng(0))
    for kind, rows in reference.groupby("type"):
        decoded = decode_rows(rep.loc[rows.index], kind)
        for column in ("amount", *BALANCE_COLUMNS, "is_unauthorized_overdraft"):
            np.testing.assert_allclose(decoded[column], rows[column], atol=0.011, err_msg=column)
        hours = (rows["timestamp"].to_numpy() // 3600) % 24
        np.testing.assert_array_equal(decoded["hour"], hours)


def test_episodes_link_repeats_and_mule_cash_outs():
    t = 1_704_067_200
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 9, 3],
            "dest_id": [50, 50, 50, 9, 60, 9],
            "timestamp": [t, t + 100, t + 20_000, t + 50, t + 400, t + 30_000],
        }
    ).sort_values("timestamp", ignore_index=True)
    episode = dict(zip(frame["timestamp"] - t, find_episodes(frame, gap=1800), strict=True))
    assert episode[0] == episode[100] != episode[20_000]  # same user, then a long pause
    assert episode[50] == episode[400]  # user 2 pays 9, who cashes out minutes later
    assert episode[30_000] != episode[400]  # paying 9 with nobody acting after


@pytest.mark.slow
def test_generate_meets_the_data_contract(synthetic):
    assert len(synthetic) == N_ROWS
    assert tuple(synthetic.columns) == TRANSACTION_COLUMNS
    assert synthetic["transaction_id"].is_unique
    assert synthetic["timestamp"].is_monotonic_increasing
    assert set(synthetic["type"]) <= set(TRANSACTION_TYPES)
    assert (synthetic["amount"] > 0).all()
    assert (synthetic[list(BALANCE_COLUMNS)] >= 0).all().all()
    assert np.isfinite(synthetic[["amount", *BALANCE_COLUMNS]].to_numpy()).all()
    assert (synthetic["user_id"] > 0).all() and (synthetic["dest_id"] > 0).all()
    assert synthetic["is_fraud"].dtype == np.int8
    # Fraud comes in whole episodes: the rate is exact up to one (short) episode.
    assert synthetic["is_fraud"].mean() == pytest.approx(FRAUD_RATE, abs=12 / N_ROWS)


@pytest.mark.slow
def test_generate_is_deterministic_and_survives_save_and_load(fitted, synthetic, tmp_path):
    bundle, _ = fitted
    save_bundle(bundle, tmp_path / "synth")
    again = generate(load_bundle(tmp_path / "synth"), N_ROWS, FRAUD_RATE, seed=3, chunk_rows=1000)
    pd.testing.assert_frame_equal(synthetic, again)
    other = generate(bundle, N_ROWS, FRAUD_RATE, seed=4, chunk_rows=1000)
    assert not other["amount"].equals(synthetic["amount"])


@pytest.mark.slow
def test_fraud_patterns_survive_synthesis(synthetic):
    fraud = synthetic[synthetic["is_fraud"] == 1]
    takeovers = fraud[fraud["type"] == "TRANSFER"]
    assert len(takeovers) > 0
    assert (takeovers["amount"] == takeovers["old_balance_orig"]).all()
    assert (takeovers["new_balance_orig"] == 0).all()
    mules = set(fraud.loc[fraud["type"] == "CASH_OUT", "user_id"])
    assert len(set(takeovers["dest_id"]) & mules) > 0, "no takeover is followed by its mule"
    features = pd.DataFrame(batch_features(synthetic), columns=FEATURE_NAMES)
    burst = features["tx_count_1h"].groupby(synthetic["is_fraud"]).mean()
    assert burst[1] > 3 * burst[0], "card-testing bursts lost their velocity"


@pytest.mark.slow
def test_quality_report_has_scores_per_class(fitted):
    _, report = fitted
    for name in ("legit", "fraud"):
        scores = report["quality"][name]
        for key in ("overall", "column_shapes", "column_pair_trends"):
            assert 0.5 < scores[key] <= 1.0, (name, key)
        assert "amount" in scores["columns"]
    assert report["sequencer"]["fraud_rows_per_episode"] > 1.5


@pytest.mark.slow
def test_stage_clis_write_the_bundle_report_and_batch(reference, tmp_path):
    ref_path = tmp_path / "train.parquet"
    reference.to_parquet(ref_path, index=False)
    params = tmp_path / "params.yaml"
    gen_params = {"n_rows": 1500, "fraud_rate": 0.02, "seed": 1, "chunk_rows": 500}
    params.write_text(yaml.safe_dump({"fit_synthesizer": FIT_PARAMS, "generate": gen_params}))
    out, report = tmp_path / "synth", tmp_path / "quality.json"
    argv = ["--params", str(params), "--reference", str(ref_path), "--out", str(out)]
    assert fit_stage.main([*argv, "--report", str(report)]) == 0
    assert {"manifest.json", "sequencer.json"} <= {p.name for p in out.iterdir()}
    assert "legit" in json.loads(report.read_text())["quality"]
    batch = tmp_path / "raw" / "synthetic.parquet"
    argv = ["--params", str(params), "--synthesizer", str(out), "--out", str(batch)]
    assert generate_stage.main(argv) == 0
    assert len(pd.read_parquet(batch)) == 1500


def test_generate_refuses_a_directory_that_is_not_a_synthesizer(tmp_path):
    params = tmp_path / "params.yaml"
    gen_params = {"n_rows": 10, "fraud_rate": 0.0, "seed": 1, "chunk_rows": 10}
    params.write_text(yaml.safe_dump({"generate": gen_params}))
    argv = ["--params", str(params), "--synthesizer", str(tmp_path), "--out",
            str(tmp_path / "x.parquet")]  # fmt: skip
    assert generate_stage.main(argv) == 1
    assert not (tmp_path / "x.parquet").exists()
