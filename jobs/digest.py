"""The daily digest: how live scoring went on one day, for the fraud team's morning review.

For the transactions scored on a UTC day (`scored_at`): volume, score and band
distributions, the fraud rate among those analysts have labelled, the precision of BLOCK
and CHALLENGE against those labels, alert precision P@k (the fraud share among the labelled
of the day's k highest scores, k = `daily_budget`, the review queue's budget) with how many
of those k were labelled, the review queue's precision per reason (exploit, and the two
kinds of exploration, from `review_queue` and the labels of its items, with how many of
those analysts gave from the queue itself), the riskiest users (ids only, PII masked) and
the model versions that served (from `scored_transactions` and `model_deployments`). Written to
`<out-dir>/<date>/` as CSV files and an `index.html` with the plots embedded, one folder
per day, so past days stay readable. Labels keep arriving after the day ends: re-running a
day refreshes its label figures.

    python -m jobs.digest --date YYYY-MM-DD --out-dir reports/digest [--params params.yaml]
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from fraudops.bands import BANDS
from fraudops.db import connect
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import mask_pii
from fraudops.review_queue import REASONS
from fraudops.settings import settings_with_database

log = logging.getLogger("fraudops.digest")

_DAY = "s.scored_at >= %(start)s AND s.scored_at < %(end)s"
QUERIES = {
    "volume": f"""
        SELECT count(*) AS transactions, count(DISTINCT s.user_id) AS users,
               count(*) FILTER (WHERE s.source = 'stream') AS stream,
               count(*) FILTER (WHERE s.source = 'inline') AS inline,
               coalesce(sum(s.amount), 0) AS amount, avg(s.score) AS mean_score,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY s.score) AS p50_score,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY s.score) AS p99_score,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY s.latency_us) AS p99_latency_us
          FROM scored_transactions s WHERE {_DAY}""",
    "bands": f"""
        SELECT s.band, count(*) AS transactions, count(f.label) AS labelled,
               count(*) FILTER (WHERE f.label = 'FRAUD') AS fraud,
               count(*) FILTER (WHERE f.label = 'LEGIT') AS legit
          FROM scored_transactions s LEFT JOIN feedback_labels f USING (transaction_id)
         WHERE {_DAY} GROUP BY s.band""",
    "scores": f"""
        SELECT least(width_bucket(s.score, 0, 1, %(bins)s), %(bins)s) AS bin, count(*) AS n
          FROM scored_transactions s WHERE {_DAY} GROUP BY 1 ORDER BY 1""",
    "hourly": f"""
        SELECT extract(hour FROM s.scored_at AT TIME ZONE 'UTC')::int AS hour,
               s.model_version, count(*) AS transactions
          FROM scored_transactions s WHERE {_DAY} GROUP BY 1, 2 ORDER BY 1, 2""",
    "top_users": f"""
        SELECT s.user_id, count(*) AS transactions,
               count(*) FILTER (WHERE s.band = 'BLOCK') AS blocked,
               count(*) FILTER (WHERE s.band = 'CHALLENGE') AS challenged,
               max(s.score) AS max_score, avg(s.score) AS mean_score,
               count(*) FILTER (WHERE f.label = 'FRAUD') AS labelled_fraud
          FROM scored_transactions s LEFT JOIN feedback_labels f USING (transaction_id)
         WHERE {_DAY} GROUP BY s.user_id
         ORDER BY max(s.score) DESC, count(*) FILTER (WHERE s.band = 'BLOCK') DESC, s.user_id
         LIMIT %(top)s""",
    "models": f"""
        SELECT s.model_version, count(*) AS transactions, avg(s.score) AS mean_score,
               min(s.scored_at) AS first_scored, max(s.scored_at) AS last_scored
          FROM scored_transactions s WHERE {_DAY} GROUP BY 1 ORDER BY min(s.scored_at)""",
    "alerts": f"""
        WITH top AS (
            SELECT s.transaction_id FROM scored_transactions s WHERE {_DAY}
             ORDER BY s.score DESC, s.transaction_id LIMIT %(k)s)
        SELECT count(*) AS alerts, count(f.label) AS labelled,
               count(*) FILTER (WHERE f.label = 'FRAUD') AS fraud
          FROM top LEFT JOIN feedback_labels f USING (transaction_id)""",
    "queue": """
        SELECT q.reason, count(*) AS items, count(f.label) AS labelled,
               count(*) FILTER (WHERE f.queue_reason = q.reason) AS labelled_from_queue,
               count(*) FILTER (WHERE f.label = 'FRAUD') AS fraud
          FROM review_queue q LEFT JOIN feedback_labels f USING (transaction_id)
         WHERE q.queue_date = %(day)s GROUP BY q.reason""",
    "deployments": """
        SELECT version, mlflow_run_id, host, pid, served_from, served_until, reason
          FROM model_deployments
         WHERE served_from < %(end)s AND (served_until IS NULL OR served_until >= %(start)s)
         ORDER BY served_from, id""",
}


@dataclass
class Digest:
    """One day's figures: a summary (metric -> value) and one table per section."""

    day: date
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _frame(cur, query: str, args: dict[str, Any]) -> pd.DataFrame:
    cur.execute(query, args)
    return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def fetch_tables(
    database_url: str, day: date, top_users: int, bins: int, k: int
) -> dict[str, pd.DataFrame]:
    """Run every digest query for `day` in one read-only snapshot."""
    start, end = day_bounds(day)
    args = {"start": start, "end": end, "bins": bins, "top": top_users, "k": k, "day": day}
    conn = connect(database_url)
    try:
        conn.set_session(readonly=True, isolation_level="REPEATABLE READ")
        with conn, conn.cursor() as cur:
            return {name: _frame(cur, query, args) for name, query in QUERIES.items()}
    finally:
        conn.close()


def shape_tables(tables: dict[str, pd.DataFrame], bins: int) -> dict[str, pd.DataFrame]:
    """Fill in the bands and histogram bins nobody landed in, and mask user ids."""
    bands = tables["bands"].set_index("band").reindex(BANDS, fill_value=0).reset_index()
    bands["precision"] = [
        _ratio(f, n) for f, n in zip(bands["fraud"], bands["labelled"], strict=True)
    ]
    scores = tables["scores"].set_index("bin").reindex(range(1, bins + 1), fill_value=0)
    scores = scores.reset_index()
    scores.insert(1, "score_from", (scores["bin"] - 1) / bins)
    scores.insert(2, "score_to", scores["bin"] / bins)
    users = tables["top_users"].copy()
    users["user_id"] = [mask_pii(str(u)) for u in users["user_id"]]
    queue = tables["queue"].set_index("reason").reindex(REASONS, fill_value=0).reset_index()
    queue["precision"] = [
        _ratio(f, n) for f, n in zip(queue["fraud"], queue["labelled"], strict=True)
    ]
    deployments = tables["deployments"].copy()
    deployments["reason"] = [mask_pii(str(r)) if r else "" for r in deployments["reason"]]
    return {
        **tables,
        "bands": bands,
        "scores": scores,
        "top_users": users,
        "queue": queue,
        "deployments": deployments,
    }


def summarise(day: date, tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The headline numbers; precision is of the labelled transactions in each band."""
    volume = tables["volume"].to_dict("records")[0]
    bands = tables["bands"].set_index("band")
    labelled, fraud = int(bands["labelled"].sum()), int(bands["fraud"].sum())
    summary = {"date": day.isoformat(), **{k: _plain(v) for k, v in volume.items()}}
    for band in BANDS:
        summary[f"band_{band.lower()}"] = int(bands.loc[band, "transactions"])
    summary |= {
        "labelled": labelled,
        "labelled_fraud": fraud,
        "fraud_rate_labelled": _ratio(fraud, labelled),
        "precision_block": _plain(bands.loc["BLOCK", "precision"]),
        "precision_challenge": _plain(bands.loc["CHALLENGE", "precision"]),
        "fraud_caught_labelled": _ratio(
            int(bands.loc["BLOCK", "fraud"] + bands.loc["CHALLENGE", "fraud"]), fraud
        ),
        "model_versions": ",".join(tables["models"]["model_version"].astype(str)),
    }
    alerts = tables["alerts"].to_dict("records")[0]
    summary |= {
        "alerts_top_k": int(alerts["alerts"]),
        "alerts_labelled": int(alerts["labelled"]),
        "alert_precision_at_k": _ratio(int(alerts["fraud"]), int(alerts["labelled"])),
    }
    for row in tables["queue"].to_dict("records"):
        name = row["reason"].replace("-", "_")
        summary[f"queue_{name}_items"] = int(row["items"])
        summary[f"queue_{name}_labelled"] = int(row["labelled"])
        summary[f"queue_{name}_precision"] = _plain(row["precision"])
    return summary


def _plain(value: Any) -> Any:
    """numpy / Decimal / NaN into JSON- and CSV-friendly Python values."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):
        value = value.item()
    return round(float(value), 6) if not isinstance(value, int | str) else value


def build_digest(database_url: str, day: date, top_users: int, bins: int, k: int) -> Digest:
    tables = shape_tables(fetch_tables(database_url, day, top_users, bins, k), bins)
    return Digest(day, summarise(day, tables), tables)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(digest: Digest) -> dict[str, str]:
    """The day's charts as base64 PNGs (Agg backend: no display on a worker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = digest.tables
    images = {}
    fig, ax = plt.subplots(figsize=(6, 3))
    width, counts = 1 / len(t["scores"]), t["scores"]["n"]
    ax.bar(t["scores"]["score_from"], counts, width=width, align="edge", log=bool(counts.any()))
    ax.set(xlabel="score", ylabel="transactions (log scale)", title="Score distribution")
    images["Score distribution"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(t["bands"]["band"], t["bands"]["transactions"], color=["#4c9", "#fb3", "#e44"])
    ax.set(ylabel="transactions", title="Bands")
    images["Bands"] = _png(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    hourly = (
        t["hourly"]
        .pivot_table(index="hour", columns="model_version", values="transactions", fill_value=0)
        .reindex(range(24), fill_value=0)
    )
    if not hourly.empty and len(hourly.columns):
        hourly.plot.bar(stacked=True, ax=ax, width=0.9)
    ax.set(xlabel="hour (UTC)", ylabel="transactions", title="Volume by hour and model version")
    images["Volume by hour"] = _png(fig)
    plt.close("all")
    return images


def render_html(digest: Digest, images: dict[str, str]) -> str:
    """One self-contained page: the summary, the charts inline, then every table."""
    title = f"fraudops daily digest, {digest.day.isoformat()}"
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in digest.summary.items()
    )
    charts = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in images.items()
    )
    sections = "".join(
        f"<h2>{html.escape(name.replace('_', ' '))}</h2>"
        + table.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}")
        for name, table in digest.tables.items()
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}figure{display:inline-block}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h1>{title}</h1><table>{rows}</table>"
        f"{charts}{sections}</body></html>\n"
    )


def write_digest(digest: Digest, out_dir: Path) -> Path:
    """Write `<out_dir>/<date>/`: summary.csv, one CSV per table, index.html."""
    day_dir = Path(out_dir) / digest.day.isoformat()
    day_dir.mkdir(parents=True, exist_ok=True)
    summary = pd.DataFrame({"metric": list(digest.summary), "value": list(digest.summary.values())})
    summary.to_csv(day_dir / "summary.csv", index=False)
    for name, table in digest.tables.items():
        table.to_csv(day_dir / f"{name}.csv", index=False)
    (day_dir / "index.html").write_text(render_html(digest, plots(digest)))
    return day_dir


def run_digest(database_url: str, day: date, out_dir: Path, params: dict[str, Any]) -> Path:
    """Build and write one day's digest; the DAG and the CLI both call this."""
    digest = build_digest(
        database_url,
        day,
        int(params["top_users"]),
        int(params["score_bins"]),
        int(params["daily_budget"]),
    )
    day_dir = write_digest(digest, out_dir)
    log.info(
        "digest for %s: %s transactions, %s labelled, written to %s",
        day,
        digest.summary["transactions"],
        digest.summary["labelled"],
        day_dir,
    )
    return day_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write one day's scoring digest.")
    parser.add_argument("--date", type=date.fromisoformat, required=True, help="YYYY-MM-DD (UTC)")
    parser.add_argument("--out-dir", type=Path, default=Path("reports/digest"))
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    settings = settings_with_database("there is nothing to digest")
    if settings is None:
        return 2
    run_digest(settings.database_url, args.date, args.out_dir, load_params(args.params, "digest"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
