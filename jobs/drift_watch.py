"""Does live traffic still look like what the champion was trained on, and do the scorer's
features match the batch transform's?

The `fraud_drift_watch` DAG calls `watch_window` every hour. For the window of rows scored
in the last `monitoring.window_minutes`, it reads those rows and the same users' earlier
transactions (as far back as a feature looks), recomputes the features with the one batch
transform, and holds them to the reference profile published beside the served model
(`fraudops.drift`): PSI per feature (with Jensen-Shannon, KS and Wasserstein beside it),
the score distribution and the band mix against the model's held-out scores, and, where
analysts have labelled rows of the window, the precision of each flagged band and recall.

Skew: for the sampled rows whose online feature vector the scorer stored
(`feature_samples`), every feature that differs from the batch value is a mismatch, named.

A window is drifted when a feature, the score or the band mix passes its PSI threshold; the
alarm goes off when a run of `monitoring.consecutive_windows` drifted windows completes
(per model version: a new champion brings a new reference). Each window leaves a JSON and
an HTML report, a `drift_reports` row and a Prometheus textfile; on alarm the DAG emits the
asset `fraudops://monitoring/drift`, which schedules `fraud_training`.

The job lives for seconds, too briefly to be scraped, and the stack has no push gateway: its
gauges go to a Prometheus textfile (what a node exporter's textfile collector serves) and
into the report row. The HTML is matplotlib's: Evidently would not install beside the
pinned plotly without downgrading it.

    python -m jobs.drift_watch [--end ISO-TIME] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudops import drift
from fraudops.bands import BANDS
from fraudops.db import connect
from fraudops.features import FEATURE_NAMES, batch_features
from fraudops.modelspec import published_versions
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.scored_rows import read_scored
from fraudops.settings import load_settings

log = logging.getLogger("fraudops.drift_watch")

_SAMPLES = """
SELECT p.transaction_id, p.features FROM feature_samples p
  JOIN scored_transactions s USING (transaction_id)
 WHERE s.scored_at >= %(start)s AND s.scored_at < %(end)s
"""
_PREVIOUS_RUN = """
SELECT consecutive FROM drift_reports
 WHERE model_version = %s AND window_end < %s AND drifted IS NOT NULL
 ORDER BY window_end DESC LIMIT 1
"""
_STORE = """
INSERT INTO drift_reports (window_start, window_end, model_version, rows, drifted,
    consecutive, alarm, drifted_features, max_feature_psi, score_psi, band_psi,
    skew_checked, skew_mismatches, report)
VALUES (%(window_start)s, %(window_end)s, %(model_version)s, %(rows)s, %(drifted)s,
    %(consecutive)s, %(alarm)s, %(drifted_features)s, %(max_feature_psi)s, %(score_psi)s,
    %(band_psi)s, %(skew_checked)s, %(skew_mismatches)s, %(report)s)
ON CONFLICT (window_end, model_version) DO UPDATE SET
    rows = EXCLUDED.rows, drifted = EXCLUDED.drifted, consecutive = EXCLUDED.consecutive,
    alarm = EXCLUDED.alarm, drifted_features = EXCLUDED.drifted_features,
    max_feature_psi = EXCLUDED.max_feature_psi, score_psi = EXCLUDED.score_psi,
    band_psi = EXCLUDED.band_psi, skew_checked = EXCLUDED.skew_checked,
    skew_mismatches = EXCLUDED.skew_mismatches, report = EXCLUDED.report,
    created_at = now()
"""


def served_model(serving_root: Path) -> tuple[Path, dict[str, Any]]:
    """The directory and model.json of the newest published model (the one served)."""
    versions = published_versions(serving_root) if Path(serving_root).is_dir() else []
    if not versions:
        raise FileNotFoundError(f"{serving_root}: no published model to hold traffic to")
    version, spec = versions[-1]
    return Path(serving_root) / version, spec


def read_window(conn, start: datetime, end: datetime) -> pd.DataFrame:
    """The window's rows with their users' recent history (`in_period` tells which)."""
    with conn.cursor() as cur:
        return read_scored(cur, start, end)


def read_samples(conn, start: datetime, end: datetime) -> dict[str, list[float]]:
    with conn.cursor() as cur:
        cur.execute(_SAMPLES, {"start": start, "end": end})
        return dict(cur.fetchall())


def window_features(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The window's rows and their batch features (history rows only feed the velocity)."""
    if frame.empty:
        return frame, np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    features = batch_features(frame)
    mask = frame["in_period"].to_numpy()
    return frame[mask].reset_index(drop=True), features[mask]


def compare_segments(reference: dict[str, Any], features: np.ndarray, min_rows: int) -> dict:
    """The type mix, and each type's amounts where the window has `min_rows` of the type
    (fewer rows make a PSI of noise)."""
    ref_mix = reference["type_mix"]
    live_mix = drift.type_shares(features)
    out: dict[str, Any] = {
        "type_mix": {
            "psi": drift.psi(list(ref_mix.values()), [live_mix[t] for t in ref_mix]),
            "reference": ref_mix,
            "live": live_mix,
        }
    }
    for name, values in drift.segments(features).items():
        if name in reference["segments"] and len(values) >= min_rows:
            out[name] = {"rows": int(len(values)),
                         **drift.compare_column(reference["segments"][name], values)}  # fmt: skip
    return out


def compare(
    reference: dict[str, Any], live: pd.DataFrame, features: np.ndarray, params: dict
) -> dict:
    """Per-feature and per-segment statistics, the score distribution and the band mix."""
    per_feature = {
        name: drift.compare_column(reference["features"][name], features[:, i])
        for i, name in enumerate(FEATURE_NAMES)
    }
    per_segment = compare_segments(reference, features, int(params["min_segment_rows"]))
    score = drift.compare_column(reference["score"], live["score"].to_numpy())
    shares = drift.band_shares(live["band"].to_numpy())
    ref_bands = [reference["bands"][b] for b in BANDS]
    bands = {
        "reference": reference["bands"],
        "live": shares,
        "psi": drift.psi(ref_bands, [shares[b] for b in BANDS]),
    }
    return {"features": per_feature, "segments": per_segment, "score": score, "bands": bands}


def label_metrics(live: pd.DataFrame) -> dict[str, Any]:
    """Precision of CHALLENGE and BLOCK, and recall of the flagged bands, over the rows of
    the window that analysts have labelled (None where nothing is labelled to judge by)."""
    labelled = live[live["label"].isin(("FRAUD", "LEGIT"))]
    fraud = labelled["label"] == "FRAUD"
    out: dict[str, Any] = {"labelled": int(len(labelled)), "fraud": int(fraud.sum())}
    for band in BANDS[1:]:
        in_band = labelled["band"] == band
        out[f"precision_{band.lower()}"] = float(fraud[in_band].mean()) if in_band.any() else None
    flagged = labelled["band"] != BANDS[0]
    out["recall_flagged"] = float(flagged[fraud].mean()) if fraud.any() else None
    return out


def skew_check(
    live: pd.DataFrame, features: np.ndarray, samples: dict[str, list[float]], tolerance: float
) -> dict[str, Any]:
    """Every sampled row whose online features differ from the batch features, by feature."""
    index = {tx: i for i, tx in enumerate(live["transaction_id"])}
    by_feature: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    checked = 0
    for tx, online in samples.items():
        if tx not in index:
            continue
        checked += 1
        batch = features[index[tx]].astype(np.float64)
        diff = np.abs(np.asarray(online, dtype=np.float64) - batch)
        for i in np.flatnonzero(~(diff <= tolerance)):
            name = FEATURE_NAMES[i]
            by_feature[name] = by_feature.get(name, 0) + 1
            if len(examples) < 20:
                examples.append(
                    {"transaction_id": tx, "feature": name,
                     "online": float(online[i]), "batch": float(batch[i])}
                )  # fmt: skip
    mismatches = sum(by_feature.values())
    return {"checked": checked, "mismatches": mismatches, "by_feature": by_feature,
            "examples": examples}  # fmt: skip


def judge(stats: dict[str, Any], params: dict[str, Any]) -> tuple[bool, list[str]]:
    """Is the window drifted, and which features passed their threshold (worst first)."""
    limit = float(params["feature_psi_max"])
    unjudged = set(params.get("unjudged_features") or ())
    judged = {**stats["features"], **stats["segments"]}
    psis = {n: s["psi"] for n, s in judged.items() if n not in unjudged}
    named = sorted((n for n, v in psis.items() if v > limit), key=lambda n: -psis[n])
    drifted = (
        bool(named)
        or stats["score"]["psi"] > float(params["score_psi_max"])
        or stats["bands"]["psi"] > float(params["band_psi_max"])
    )
    return drifted, named


def streak(conn, version: str, end: datetime, drifted: bool | None, k: int) -> tuple[int, bool]:
    """(drifted windows in a row ending here, alarm), continuing the run of this model's
    latest judged window before `end`; a window too small to judge leaves the run alone."""
    with conn.cursor() as cur:
        cur.execute(_PREVIOUS_RUN, (version, end))
        found = cur.fetchone()
    previous = found[0] if found else 0
    if drifted is None:
        return previous, False
    return drift.next_run(previous, drifted, k)


def analyse(
    conn, model_dir: Path, spec: dict, start: datetime, end: datetime, params: dict
) -> tuple[dict[str, Any], pd.DataFrame, np.ndarray]:
    """The report of one window (without the alarm), its rows and their features."""
    reference = drift.read_reference(model_dir)
    live, features = window_features(read_window(conn, start, end))
    report: dict[str, Any] = {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "model_version": spec["version"],
        "rows": int(len(live)),
        "thresholds": params,
        "skew": skew_check(
            live, features, read_samples(conn, start, end), float(params["skew_tolerance"])
        ),  # fmt: skip
        "drifted": None,
        "drifted_features": [],
    }
    if len(live) >= int(params["min_rows"]):
        report.update(compare(reference, live, features, params))
        report["labels"] = label_metrics(live)
        report["drifted"], report["drifted_features"] = judge(report, params)
    return report, live, features


def store(conn, report: dict[str, Any]) -> None:
    features = report.get("features", {})
    row = {
        **{k: report[k] for k in ("window_start", "window_end", "model_version", "rows")},
        **{k: report[k] for k in ("drifted", "consecutive", "alarm", "drifted_features")},
        "max_feature_psi": max((s["psi"] for s in features.values()), default=None),
        "score_psi": report.get("score", {}).get("psi"),
        "band_psi": report.get("bands", {}).get("psi"),
        "skew_checked": report["skew"]["checked"],
        "skew_mismatches": report["skew"]["mismatches"],
        "report": json.dumps(report),
    }
    with conn, conn.cursor() as cur:
        cur.execute(_STORE, row)


def gauges(report: dict[str, Any]) -> list[tuple[str, str, dict[str, str], float]]:
    """(name, help, labels, value) of the window's Prometheus gauges."""
    base = {"model_version": report["model_version"]}
    out = [
        ("fraudops_drift_window_rows", "Scored rows in the window", base, report["rows"]),
        ("fraudops_drift_drifted", "1 if the window drifted", base, float(bool(report["drifted"]))),
        ("fraudops_drift_consecutive_windows", "Drifted windows in a row", base,
         report["consecutive"]),
        ("fraudops_drift_alarm", "1 if this window raised the alarm", base,
         float(report["alarm"])),
        ("fraudops_skew_mismatches", "Online vs batch feature mismatches", base,
         report["skew"]["mismatches"]),
        ("fraudops_skew_checked_rows", "Sampled rows checked for skew", base,
         report["skew"]["checked"]),
    ]  # fmt: skip
    if "score" in report:
        out.append(("fraudops_drift_score_psi", "PSI of the score", base, report["score"]["psi"]))
        out.append(("fraudops_drift_band_psi", "PSI of the band mix", base, report["bands"]["psi"]))
        for name, stats in {**report["features"], **report["segments"]}.items():
            labels = {**base, "feature": name}
            out.append(("fraudops_drift_feature_psi", "PSI per feature", labels, stats["psi"]))
    return out


def write_metrics(report: dict[str, Any], path: Path) -> None:
    """The gauges in Prometheus' textfile format (a node exporter's textfile collector or
    any scraper reads it; the job lives minutes, too short to be scraped itself)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    made: dict[str, Gauge] = {}
    for name, doc, labels, value in gauges(report):
        if name not in made:
            made[name] = Gauge(name, doc, list(labels), registry=registry)
        made[name].labels(**labels).set(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def _histograms(reference: dict[str, Any], report: dict[str, Any]) -> str:
    """One PNG (base64) of every feature's and the score's bin shares, reference beside live."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(n, reference["features"][n], report["features"][n]) for n in FEATURE_NAMES]
    panels += [(n, reference["segments"][n], stats) for n, stats in report["segments"].items()
               if n in reference["segments"]]  # fmt: skip
    panels.append(("score", reference["score"], report["score"]))
    cols = 4
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.4 * rows))
    drifted = set(report["drifted_features"])
    for ax, (name, ref, live) in zip(axes.flat, panels, strict=False):
        x = np.arange(len(ref["proportions"]))
        ax.bar(x - 0.2, ref["proportions"], 0.4, label="reference")
        ax.bar(x + 0.2, live["live_proportions"], 0.4, label="live")
        ax.set_title(f"{name}  PSI {live['psi']:.3f}", fontsize=9,
                     color="red" if name in drifted else "black")  # fmt: skip
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=70)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(reference: dict[str, Any], report: dict[str, Any]) -> str:
    """The window's HTML report: verdict, drifted features, statistics, histograms, skew."""
    e = html.escape
    verdict = {None: "not judged (too few rows)", True: "DRIFTED", False: "stable"}
    parts = [
        f"<html><head><meta charset='utf-8'><title>drift {e(report['window_end'])}</title>"
        "</head><body>",
        f"<h1>Drift report: {e(report['window_start'])} to {e(report['window_end'])}</h1>",
        f"<p>Model {e(report['model_version'])}, {report['rows']} rows: "
        f"<b>{verdict[report['drifted']]}</b>; {report['consecutive']} drifted window(s) in "
        f"a row; alarm: <b>{'yes' if report['alarm'] else 'no'}</b>.</p>",
        f"<p>Drifted features: {e(', '.join(report['drifted_features']) or 'none')}</p>",
    ]
    if "features" in report:
        parts.append(_stats_table(report))
        parts.append(f"<img alt='histograms' src='data:image/png;base64,"
                     f"{_histograms(reference, report)}'/>")  # fmt: skip
    skew = report["skew"]
    by_feature = e(json.dumps(skew["by_feature"]))
    parts.append(f"<h2>Skew</h2><p>{skew['checked']} sampled rows checked, "
                 f"{skew['mismatches']} mismatches: {by_feature}</p>")  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)


def _stats_table(report: dict[str, Any]) -> str:
    head = "<tr><th>feature</th><th>PSI</th><th>JS</th><th>KS</th><th>Wasserstein</th></tr>"
    rows = []
    items = [*report["features"].items(), *report["segments"].items(), ("score", report["score"])]
    for name, s in items:
        cells = [s.get(k) for k in ("psi", "js_distance", "ks_statistic", "wasserstein")]
        text = "".join(f"<td>{'' if c is None else f'{c:.4f}'}</td>" for c in cells)
        style = " style='color:red'" if name in report["drifted_features"] else ""
        rows.append(f"<tr{style}><td>{html.escape(name)}</td>{text}</tr>")
    bands = html.escape(json.dumps(report["bands"]))
    labels = html.escape(json.dumps(report.get("labels")))
    return (f"<table border='1'>{head}{''.join(rows)}</table>"
            f"<p>Band mix: {bands}</p><p>Labels: {labels}</p>")  # fmt: skip


def write_reports(reference: dict, report: dict, out_dir: Path) -> dict[str, str]:
    """JSON and HTML per window (named by its end), and the latest gauges."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = datetime.fromisoformat(report["window_end"]).strftime("%Y%m%dT%H%M%SZ")
    paths = {"json": out_dir / f"{stem}.json", "html": out_dir / f"{stem}.html",
             "metrics": out_dir / "drift.prom"}  # fmt: skip
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["html"].write_text(render_html(reference, report))
    write_metrics(report, paths["metrics"])
    return {k: str(v) for k, v in paths.items()}


def watch_window(
    database_url: str, serving_root: Path, end: datetime, params: dict[str, Any], out_dir: Path
) -> dict[str, Any]:
    """Analyse, judge, store and report the window ending at `end`; returns the summary the
    DAG passes on (and, on alarm, the asset event's extra)."""
    model_dir, spec = served_model(serving_root)
    start = end - timedelta(minutes=float(params["window_minutes"]))
    conn = connect(database_url)
    try:
        report, _, _ = analyse(conn, model_dir, spec, start, end, params)
        k = int(params["consecutive_windows"])
        report["consecutive"], report["alarm"] = streak(
            conn, spec["version"], end, report["drifted"], k
        )
        store(conn, report)
    finally:
        conn.close()
    report["files"] = write_reports(drift.read_reference(model_dir), report, out_dir)
    log.info("window %s..%s: %d rows, drifted %s (%s), %d in a row, alarm %s, skew %d",
             start.isoformat(), end.isoformat(), report["rows"], report["drifted"],
             ", ".join(report["drifted_features"]), report["consecutive"], report["alarm"],
             report["skew"]["mismatches"])  # fmt: skip
    return summary(report)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("window_start", "window_end", "model_version", "rows", "drifted", "consecutive",
            "alarm", "drifted_features", "files")  # fmt: skip
    out = {k: report[k] for k in keys}
    out["skew_mismatches"] = report["skew"]["mismatches"]
    out["score_psi"] = report.get("score", {}).get("psi")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Hold the last window of live traffic to "
                                     "the champion's training reference.")  # fmt: skip
    parser.add_argument("--end", help="window end, ISO time (default: now)")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    configure_logging()
    settings = load_settings()
    params = load_params(args.params, "monitoring")
    end = datetime.fromisoformat(args.end) if args.end else datetime.now(UTC)
    result = watch_window(
        settings.database_url or settings.local_database_url(),
        settings.model_dir,
        end,
        params,
        Path(params["report_dir"]),
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
