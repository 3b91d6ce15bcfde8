"""The validate stage with real Great Expectations: a good batch passes; a corrupted one
fails with exit code 1 and result.json names each failure; GX writes only into the report
directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from feature_checks import validate
from training.lib.simulator import SimConfig, simulate

PARAMS = {
    "min_rows": 100,
    "max_rows": 1_000_000,
    "fraud_rate_min": 0.0005,
    "fraud_rate_max": 0.05,
    "amount_quantile_factor": 1.5,
    "type_kl_max": 0.05,
}


def _sim(seed: int) -> pd.DataFrame:
    cfg = SimConfig(n_users=600, n_steps=72, start=1_704_067_200, tx_per_user_day=2.0,
                    ato_rate=0.002, card_testing_rate=0.002, seed=seed)  # fmt: skip
    return simulate(cfg)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batches")
    (root / "params.yaml").write_text(yaml.safe_dump({"validate": PARAMS}))
    _sim(1).to_parquet(root / "reference.parquet", index=False)
    _sim(2).to_parquet(root / "good.parquet", index=False)
    return {"root": root, "params": root / "params.yaml", "reference": root / "reference.parquet",
            "good": root / "good.parquet"}  # fmt: skip


def _write(files, name: str, frame: pd.DataFrame) -> Path:
    path = files["root"] / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return path


def _run(files, batch: Path, report_dir: Path) -> tuple[int, dict]:
    argv = ["--params", str(files["params"]), "--batch", str(batch),
            "--reference", str(files["reference"]), "--report-dir", str(report_dir)]  # fmt: skip
    code = validate.main(argv)
    return code, json.loads((report_dir / "result.json").read_text())


def _failures(result: dict) -> dict[tuple[str, str | None], dict]:
    return {(f["expectation"], f["column"]): f for f in result["failed"]}


def test_a_good_batch_passes_and_gx_writes_only_the_report(files, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    report = tmp_path / "report"
    code, result = _run(files, files["good"], report)
    assert code == 0, result["failed"]
    assert result["success"] is True and result["failed"] == []
    assert result["row_count"] == len(pd.read_parquet(files["good"]))
    assert result["batch_sha256"] == validate.file_sha256(files["good"])
    assert result["evaluated"] == result["successful"] > 30
    assert (report / "data_docs" / "index.html").is_file()
    assert list(cwd.iterdir()) == []  # no gx/ or uncommitted/ folders


def test_a_corrupted_batch_fails_and_names_each_problem(files, tmp_path, capsys):
    frame = pd.read_parquet(files["good"])
    frame.loc[10, "amount"] = -5.0
    frame.loc[20, "type"] = "WIRE"
    frame.loc[30, "amount"] = np.nan
    code, result = _run(files, _write(files, "corrupted", frame), tmp_path / "report")
    assert code == 1
    assert result["success"] is False
    failed = _failures(result)
    assert failed[("expect_column_values_to_be_between", "amount")]["unexpected_values"] == [-5.0]
    assert failed[("expect_column_values_to_be_in_set", "type")]["unexpected_values"] == ["WIRE"]
    assert failed[("expect_column_values_to_not_be_null", "amount")]["unexpected_count"] == 1
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()
    printed = capsys.readouterr().out
    assert "validation FAILED" in printed and "WIRE" in printed


def test_drift_and_broken_batch_contracts_are_caught(files, tmp_path):
    frame = pd.read_parquet(files["good"])
    frame["amount"] *= 3.0  # legit amounts far from the reference's
    frame["is_fraud"] = np.int8(0)  # no fraud at all: below fraud_rate_min
    frame.loc[5, "transaction_id"] = frame.loc[6, "transaction_id"]
    frame = frame.iloc[::-1].reset_index(drop=True)  # no longer sorted by timestamp
    code, result = _run(files, _write(files, "drifted", frame), tmp_path / "report")
    assert code == 1
    failed = _failures(result)
    assert ("expect_column_quantile_values_to_be_between_plain_bools", "amount") in failed
    assert failed[("expect_column_mean_to_be_between", "is_fraud")]["observed_value"] == 0.0
    assert ("expect_column_values_to_be_unique", "transaction_id") in failed
    assert ("expect_column_values_to_be_increasing", "timestamp") in failed


def test_a_batch_with_the_wrong_columns_fails_cleanly(files, tmp_path):
    frame = pd.read_parquet(files["good"]).drop(columns=["dest_id"])
    frame["user_id"] = frame["user_id"].astype(float)
    code, result = _run(files, _write(files, "columns", frame), tmp_path / "report")
    assert code == 1
    failed = _failures(result)
    assert ("expect_table_columns_to_match_ordered_list", None) in failed
    assert ("expect_column_values_to_be_in_type_list", "user_id") in failed


def test_an_unreadable_batch_is_recorded_as_a_failure(files, tmp_path):
    bad = files["root"] / "not_parquet.parquet"
    bad.write_text("step,type\n1,PAYMENT\n")
    code, result = _run(files, bad, tmp_path / "report")
    assert code == 2
    assert result["success"] is False and result["error"]
