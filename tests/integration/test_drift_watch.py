"""The drift watch against real Postgres: live traffic shifted the way fraud shifts raises
the alarm within K windows, the same traffic as the reference raises none over 24 windows,
a feature computed differently online than in batch is named by the skew check, and each
window leaves its JSON and HTML report, a drift_reports row and the Prometheus gauges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fraudops.db import connect
from fraudops.features import FEATURE_NAMES, batch_features
from fraudops.params import load_params
from jobs.drift_watch import watch_window
from testkit import drift_traffic as traffic
from testkit.stack import query
from testkit.transactions import START

ROWS = 200_000  # 30 days: ~3,300 rows per 12-hour window
WINDOW_DAYS = 0.5
SHIFT_DAY = 8  # a week of stable history first: the gap feature looks back that far


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("drift") / "serving"
    return root, traffic.publish_reference_model(root, "v1", ROWS, seed=1)


@pytest.fixture(scope="module")
def live():
    return traffic.live_stream(ROWS, seed=2)


@pytest.fixture(scope="module")
def params(project_root) -> dict:
    params = load_params(project_root / "params.yaml", "monitoring")
    params["window_minutes"] = int(WINDOW_DAYS * 24 * 60)
    return params


def seeded(postgres_server_url, rows):
    return traffic.seeded_database(postgres_server_url, rows)


def watch(url, root, params, out: Path, first_day: float, windows: int) -> list[dict]:
    ends = [traffic.window_end(first_day + WINDOW_DAYS * (i + 1)) for i in range(windows)]
    return [watch_window(url, root, end.to_pydatetime(), params, out) for end in ends]


@pytest.mark.slow
def test_the_reference_distribution_raises_no_alarm_over_24_windows(
    postgres_server_url, served, live, params, tmp_path
):
    root, spec = served
    last = SHIFT_DAY + 24 * WINDOW_DAYS
    rows = traffic.scored_rows(live[live["timestamp"] < START + last * traffic.DAY], spec)
    with seeded(postgres_server_url, rows) as url:
        results = watch(url, root, params, tmp_path, SHIFT_DAY, 24)
    assert all(r["rows"] >= params["min_rows"] for r in results)
    assert [r["alarm"] for r in results].count(True) == 0
    assert [r["drifted"] for r in results].count(True) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("amount_x5", "log_amount[TRANSFER]"),
        ("type_mix", "type_mix"),
        ("new_users", "log_seconds_since_last"),
    ],
)
def test_shifted_traffic_raises_the_alarm_within_k_windows(
    postgres_server_url, served, live, params, tmp_path, kind, named
):
    root, spec = served
    k = int(params["consecutive_windows"])
    shifted = traffic.shift(live, kind, START + SHIFT_DAY * traffic.DAY)
    last = SHIFT_DAY + (k + 1) * WINDOW_DAYS
    rows = traffic.scored_rows(shifted[shifted["timestamp"] < START + last * traffic.DAY], spec)
    with seeded(postgres_server_url, rows) as url:
        results = watch(url, root, params, tmp_path, SHIFT_DAY, k + 1)
        stored = _stored(url)
    alarms = [i for i, r in enumerate(results) if r["alarm"]]
    assert alarms and alarms[0] < k, [r["drifted_features"] for r in results]
    assert len(alarms) == 1  # a persisting drift alarms once, not every window
    fired = results[alarms[0]]
    assert named in fired["drifted_features"]
    assert [row[1] for row in stored] == [r["alarm"] for r in results]
    assert all(named in row[2] for row in stored[: alarms[0] + 1])
    page = Path(fired["files"]["html"]).read_text()
    assert named in page and "data:image/png;base64," in page
    report = json.loads(Path(fired["files"]["json"]).read_text())
    assert report["alarm"] and report["consecutive"] == k
    assert report["features"]["log_amount"]["ks_statistic"] >= 0
    gauges = Path(fired["files"]["metrics"]).read_text()
    assert "fraudops_drift_alarm" in gauges and "fraudops_drift_feature_psi" in gauges


def _stored(url: str) -> list[tuple]:
    sql = "SELECT window_end, alarm, drifted_features, report FROM drift_reports ORDER BY 1"
    return query(url, sql)


def _sample(url: str, ids: list[str], features: np.ndarray) -> None:
    conn = connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM feature_samples")
        cur.executemany(
            "INSERT INTO feature_samples (transaction_id, features, model_version)"
            " VALUES (%s, %s, 'v1')",
            [(tx, row.astype(float).tolist()) for tx, row in zip(ids, features, strict=True)],
        )
    conn.close()


def test_the_skew_check_names_a_feature_computed_differently_online(
    postgres_server_url, served, live, params, tmp_path
):
    """Samples equal to the batch features: no mismatch. The same samples with the hour
    count computed one too high online (the bug injected): every one is named."""
    root, spec = served
    end_day = SHIFT_DAY + WINDOW_DAYS
    frame = live[live["timestamp"] < START + end_day * traffic.DAY].reset_index(drop=True)
    features = batch_features(frame)
    window = np.flatnonzero(frame["timestamp"].to_numpy() >= START + SHIFT_DAY * traffic.DAY)
    picked = window[:: max(len(window) // 40, 1)][:40]
    ids = frame["transaction_id"].to_numpy()[picked].tolist()
    with seeded(postgres_server_url, traffic.scored_rows(frame, spec)) as url:
        _sample(url, ids, features[picked])
        [clean] = watch(url, root, params, tmp_path, SHIFT_DAY, 1)
        wrong = features[picked].copy()
        wrong[:, FEATURE_NAMES.index("tx_count_1h")] += 1.0
        _sample(url, ids, wrong)
        [skewed] = watch(url, root, params, tmp_path, SHIFT_DAY, 1)
        report = _stored(url)[-1][3]
    assert clean["skew_mismatches"] == 0
    assert skewed["skew_mismatches"] == len(ids)
    assert report["skew"]["checked"] == len(ids)
    assert report["skew"]["by_feature"] == {"tx_count_1h": len(ids)}
    assert report["skew"]["examples"][0]["feature"] == "tx_count_1h"
