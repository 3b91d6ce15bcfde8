"""Live traffic for the drift watch: a served model directory whose reference profile comes
from one stream of toy transactions, and scored rows of another stream (the same
distribution, or shifted the way fraud shifts) written to scored_transactions with
`scored_at` at the transaction's own time, so a window of scored_at is a window of events.

The score is a fixed logistic function of the features, standing in for the model: the job
reads scores from the table and never runs a model, so a TFLite file is not needed here."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fraudops import drift
from fraudops.bands import BANDS, bands_for
from fraudops.db import connect
from fraudops.features import FEATURE_NAMES, N_FEATURES, batch_features
from fraudops.modelspec import MODEL_FILE, now_iso, write_spec
from testkit.stack import fresh_database
from testkit.transactions import START, make_transactions

DAY = 86400
_WEIGHTS = np.linspace(-0.3, 0.3, N_FEATURES)
_COLUMNS = (
    "transaction_id", "user_id", "event_ts", "type", "amount", "old_balance_orig",
    "new_balance_orig", "old_balance_dest", "new_balance_dest", "is_unauthorized_overdraft",
    "score", "band", "model_version", "source", "scored_at",
)  # fmt: skip


def toy_scores(features: np.ndarray) -> np.ndarray:
    """A deterministic stand-in for the model's probability of fraud."""
    z = (np.asarray(features, dtype=np.float64) * _WEIGHTS).sum(axis=1) - 1.0
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def publish_reference_model(serving_root: Path, version: str, n: int, seed: int) -> dict:
    """Publish `version` with model.json and the drift reference of a stream of `n`
    transactions over 30 days (its first 80% as training, the rest as held-out scores)."""
    frame = make_transactions(n, seed=seed, days=30)
    features = batch_features(frame)
    cut = int(0.8 * len(frame))
    held_out = toy_scores(features[cut:])
    thresholds = {
        "challenge": float(np.quantile(held_out, 0.99)),
        "block": float(np.quantile(held_out, 0.999)),
    }
    model_dir = Path(serving_root) / version
    model_dir.mkdir(parents=True)
    (model_dir / MODEL_FILE).write_bytes(b"not a model: the drift watch never loads it")
    spec = {
        "version": version, "mlflow_run_id": "drift-test", "data_hash": "md5-drift-test",
        "feature_names": list(FEATURE_NAMES), "thresholds": thresholds,
        "metrics": {}, "explain": {}, "published_at": now_iso(),
        "golden": {"inputs": [[0.0] * N_FEATURES], "outputs": [0.0], "tolerance": 1e-4},
    }  # fmt: skip
    write_spec(model_dir, spec)
    reference = drift.build_reference(features[:cut], held_out, thresholds, 10, 5000, seed)
    drift.write_reference(model_dir, reference)
    return spec


def live_stream(n: int, seed: int, days: int = 30) -> pd.DataFrame:
    """Live transactions drawn like the reference (same users' rates, types, amounts)."""
    frame = make_transactions(n, seed=seed, days=days)
    frame["transaction_id"] = [f"live-{seed}-{i:08d}" for i in range(len(frame))]
    return frame


def shift(frame: pd.DataFrame, kind: str, from_ts: int, seed: int = 0) -> pd.DataFrame:
    """The stream with rows at or after `from_ts` shifted: `amount_x5` (TRANSFER amounts
    times five), `type_mix` (half of the PAYMENT and CASH_IN rows become TRANSFER or
    CASH_OUT), or `new_users` (a third of the rows from accounts never seen before)."""
    out = frame.copy()
    rng = np.random.default_rng(seed)
    late = out["timestamp"].to_numpy() >= from_ts
    if kind == "amount_x5":
        rows = late & (out["type"] == "TRANSFER").to_numpy()
        out.loc[rows, "amount"] *= 5.0
    elif kind == "type_mix":
        rows = late & out["type"].isin(["PAYMENT", "CASH_IN"]).to_numpy()
        rows &= rng.random(len(out)) < 0.5
        out.loc[rows, "type"] = rng.choice(["TRANSFER", "CASH_OUT"], size=int(rows.sum()))
    elif kind == "new_users":
        rows = late & (rng.random(len(out)) < 1 / 3)
        out.loc[rows, "user_id"] = 10_000_000 + rng.integers(0, 10**6, int(rows.sum()))
    else:
        raise ValueError(f"unknown shift {kind!r}")
    return out


def scored_rows(frame: pd.DataFrame, spec: dict, delay: int = 0) -> pd.DataFrame:
    """The scored_transactions rows the scorer would have written for `frame`, each scored
    `delay` seconds after its event (a run of Airflow needs windows after its start date)."""
    features = batch_features(frame)
    scores = toy_scores(features)
    rows = frame.rename(columns={"timestamp": "event_ts"}).copy()
    rows["score"] = scores
    rows["band"] = [BANDS[b] for b in bands_for(scores, spec["thresholds"])]
    rows["model_version"] = spec["version"]
    rows["source"] = "stream"
    rows["scored_at"] = pd.to_datetime(rows["event_ts"] + delay, unit="s", utc=True)
    return rows[list(_COLUMNS)]


def seed_scored(conn, rows: pd.DataFrame) -> None:
    """COPY scored rows into scored_transactions."""
    buf = io.StringIO()
    rows.to_csv(buf, index=False, header=False)
    buf.seek(0)
    with conn, conn.cursor() as cur:
        cur.copy_expert(
            f"COPY scored_transactions ({', '.join(_COLUMNS)}) FROM STDIN WITH (FORMAT csv)", buf
        )


def window_end(day: float, delay: int = 0) -> pd.Timestamp:
    """The end of a window `day` days into the stream, for rows scored `delay` s late."""
    return pd.Timestamp(START + int(day * DAY) + delay, unit="s", tz="UTC")


@contextlib.contextmanager
def seeded_database(server_url: str, rows: pd.DataFrame) -> Iterator[str]:
    """A fresh, migrated database holding `rows` as scored transactions (planner statistics
    taken, as on a live table); dropped afterwards."""
    with fresh_database(server_url, "drift") as url:
        conn = connect(url)
        with conn, conn.cursor() as cur:
            # An autovacuum worker woken by the bulk load belongs to the server's superuser,
            # whom the teardown's DROP DATABASE ... FORCE may not terminate.
            for table in ("scored_transactions", "feature_samples", "drift_reports"):
                cur.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        seed_scored(conn, rows)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE scored_transactions")
        conn.close()
        yield url
