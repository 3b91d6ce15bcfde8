"""Does the demo's replay look like what the model was evaluated on? A trained project's
held-out set goes through scripts/replay.py and the real live loop, then the drift watch
judges the window holding nothing but the replay. Printed: the band mix replayed vs held
out, the score and band PSI, and every judged feature's PSI with its verdict, beside the
held-out set's own PSI against the same reference (a feature the held-out set itself
drifts on is the data's doing, not the replay's).

    python -m bench.replay_drift PROJECT [--max 20000] [--rate 400] [--work DIR]

PROJECT has been through `dvc repro` (testkit/pipeline_project.py makes one). The
loop runs on the dev stack's Kafka (its SASL login) and Postgres, as the tests do."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from devstack import with_local_kafka_login
from fraudops import drift
from fraudops.bands import BANDS
from fraudops.features import FEATURE_NAMES
from fraudops.params import load_params
from fraudops.settings import Settings, load_settings
from jobs.drift_watch import compare_segments, served_model
from testkit.replay_loop import band_mix, drift_report, live_loop, replay


def replayed(project: Path, work: Path, max_rows: int, rate: float) -> tuple[dict, dict]:
    """The replayed band mix and the drift watch's report over the replay's window."""
    settings = load_settings()
    kafka = replace(Settings(), **with_local_kafka_login(settings).kafka_login())
    reference = project / "data" / "reference"
    args = ("--source", str(reference / "holdout.parquet"),
            "--history", str(reference / "train.parquet"),
            "--rate", str(rate), "--max", str(max_rows))  # fmt: skip
    server_url = settings.with_local_services().database_url
    with live_loop(project / "models" / "serving", work, server_url, kafka) as loop:
        replay(loop, *args, timeout=max(600.0, 3 * max_rows / rate))
        return band_mix(loop), drift_report(loop, project / "params.yaml", work / "drift")


def held_out_psi(project: Path, min_segment_rows: int) -> dict[str, float]:
    """PSI of the featurized held-out set against the served model's drift reference."""
    reference = drift.read_reference(served_model(project / "models" / "serving")[0])
    test = pd.read_parquet(project / "data" / "features" / "test.parquet")
    x = test[list(FEATURE_NAMES)].to_numpy(np.float64)
    psis = {n: drift.compare_column(reference["features"][n], x[:, i])["psi"]
            for i, n in enumerate(FEATURE_NAMES)}  # fmt: skip
    segments = compare_segments(reference, x, min_segment_rows)
    return psis | {name: s["psi"] for name, s in segments.items()}


def table(mix: dict, report: dict, held_out: dict[str, float], params: dict[str, Any]) -> str:
    bands = report["bands"]
    lines = [f"rows in window {report['rows']}, drifted {report['drifted']}",
             f"{'band':10s} {'replay':>8s} {'held-out':>9s}"]  # fmt: skip
    lines += [f"{b:10s} {mix.get(b, 0.0):8.4f} {bands['reference'][b]:9.4f}" for b in BANDS]
    lines += [f"band PSI {bands['psi']:.4f}   score PSI {report['score']['psi']:.4f}"
              f"   skew mismatches {report['skew']['mismatches']}/{report['skew']['checked']}",
              f"{'feature':28s} {'replay':>7s} {'drifted':>8s} {'held-out':>9s}"]  # fmt: skip
    unjudged = set(params.get("unjudged_features") or ())
    for name, stats in {**report["features"], **report["segments"]}.items():
        verdict = ("unjudged" if name in unjudged
                   else "yes" if name in report["drifted_features"] else "no")  # fmt: skip
        lines.append(f"{name:28s} {stats['psi']:7.3f} {verdict:>8s} "
                     f"{held_out.get(name, float('nan')):9.3f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--max", type=int, default=20_000, help="rows replayed, history included")
    parser.add_argument("--rate", type=float, default=400.0, help="rows sent per second")
    parser.add_argument("--work", type=Path, help="logs and drift reports (default: a temp dir)")
    args = parser.parse_args(argv)
    params = load_params(args.project / "params.yaml", "monitoring")
    work = args.work or Path(tempfile.mkdtemp(prefix="replay-drift-"))
    mix, report = replayed(args.project.resolve(), work, args.max, args.rate)
    held_out = held_out_psi(args.project, int(params["min_segment_rows"]))
    print(table(mix, report, held_out, params))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
