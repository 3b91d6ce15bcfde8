"""collect_feedback and the label watch without a database: window bounds, the empty
export, the watermark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest

from fraudops.features import FEATURE_NAMES
from jobs.label_watch import watermark
from training.collect_feedback import FEEDBACK_COLUMNS, SCHEMA, window_bounds

# (id, event_ts, type, amount, dest_id, score, band, model_version, label, label source)


def test_window_bounds():
    as_of = datetime(2026, 3, 10, tzinfo=UTC)
    assert window_bounds(7, as_of) == (datetime(2026, 3, 3, tzinfo=UTC), as_of)
    assert window_bounds(0, as_of)[0].year == 1970
    with pytest.raises(ValueError, match="window_days"):
        window_bounds(-1, as_of)


def test_without_a_database_the_cli_writes_an_empty_file_with_the_schema(tmp_path):
    params = "collect_feedback:\n  window_days: 30\n  label_delay_days: 30\n"
    (tmp_path / "params.yaml").write_text(params)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    out, report = tmp_path / "data" / "labels.parquet", tmp_path / "reports" / "feedback.json"
    command = [sys.executable, "-m", "training.collect_feedback", "--out", str(out)]
    command += ["--report", str(report), "--params", str(tmp_path / "params.yaml")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "DATABASE_URL is not set" in result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.equals(SCHEMA)
    assert tuple(table.column_names) == FEEDBACK_COLUMNS
    assert json.loads(report.read_text()) == {
        "context": 0,
        "count": 0,
        "fraud": 0,
        "legit": 0,
        "source": "none",
        "window_days": 30,
        "window_end": None,
        "window_start": None,
    }


# --- label watch: when have enough new labels arrived to retrain? --------------------------


def publish_spec(serving_root, version: str, published_at: str, window_end: str | None) -> None:
    """A published model directory as far as the watch reads it: its model.json."""
    spec = {
        "version": version,
        "mlflow_run_id": "r",
        "data_hash": "h",
        "feature_names": list(FEATURE_NAMES),
        "thresholds": {"challenge": 0.5, "block": 0.9},
        "metrics": {},
        "golden": {"inputs": [[0.0] * len(FEATURE_NAMES)], "outputs": [0.1]},
        "explain": {},
        "published_at": published_at,
        "labels": {"count": 3, "window_start": None, "window_end": window_end},
    }
    (serving_root / version).mkdir(parents=True)
    (serving_root / version / "model.json").write_text(json.dumps(spec))


def test_the_watermark_is_the_later_of_the_served_model_and_the_last_event(tmp_path):
    assert watermark(tmp_path / "none", None) is None
    publish_spec(tmp_path, "v1", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00")
    publish_spec(tmp_path, "v2", "2026-02-01T00:00:00+00:00", "2026-01-31T10:00:00+00:00")
    assert watermark(tmp_path, None) == datetime(2026, 1, 31, 10, tzinfo=UTC)
    older = {"window_end": "2026-01-20T00:00:00+00:00"}
    newer = {"window_end": "2026-02-02T00:00:00+00:00"}
    assert watermark(tmp_path, older) == datetime(2026, 1, 31, 10, tzinfo=UTC)
    assert watermark(tmp_path, newer) == datetime(2026, 2, 2, tzinfo=UTC)
