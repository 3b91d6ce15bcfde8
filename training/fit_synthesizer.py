"""Stage `fit_synthesizer`: learn from the reference how to make synthetic transactions.

Fits the row model (one Gaussian copula per (class, type) segment) and the episode
sequencer on the reference, and saves both as one bundle that generate loads; the approach
is described in training/synthesizer/__init__.py. Segments with fewer than
`min_segment_rows` rows are dropped (with a warning) along with the episode templates that
need them.

The report JSON (a DVC metric) holds SDV's quality report per class (overall score, Column
Shapes, Column Pair Trends, per-column shapes) computed on the canonical columns, the
segments fitted and the sequencer's statistics."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from training.lib.locations import fit_mix
from training.synthesizer.bundle import SynthesizerBundle, save_bundle
from training.synthesizer.copula import fit_segments, quiet_libraries
from training.synthesizer.quality import quality_report
from training.synthesizer.sequencer import fit_sequencer, sequencer_summary

log = logging.getLogger("training.fit_synthesizer")


def fit_synthesizer(train: pd.DataFrame, params: dict) -> tuple[SynthesizerBundle, dict]:
    """Fit the segments' copulas and the sequencer; report SDV's quality scores."""
    if train.empty:
        raise ValueError("the reference is empty")
    rng = np.random.default_rng(int(params["seed"]))
    started = time.perf_counter()
    segments = fit_segments(train, params, rng)
    if not any(label == 0 for label, _ in segments):
        raise ValueError("no legit segment has enough rows to fit; need a larger reference")
    sequencer = fit_sequencer(train, set(segments), params, rng)
    mix = fit_mix(train)  # where payments come from, by class; None: a reference without
    sequencer["location"] = mix.to_json() if mix is not None else None  # addresses
    fit_seconds = time.perf_counter() - started
    report = {
        "quality": quality_report(
            train, segments, int(params["quality_rows"]), int(params["seed"])
        ),
        "fit_seconds": round(fit_seconds, 2),
        "segments": {
            s.name: {"rows": s.rows, "distribution": s.distribution} for s in segments.values()
        },
        "sequencer": sequencer_summary(sequencer),
    }
    return SynthesizerBundle(segments, sequencer), report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging()
    quiet_libraries()
    try:
        params = load_params(args.params, "fit_synthesizer")
        bundle, report = fit_synthesizer(pd.read_parquet(args.reference), params)
    except (OSError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 1
    save_bundle(bundle, args.out)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    for name, scores in report["quality"].items():
        log.info(
            "%s quality: overall %.3f, column shapes %.3f, pair trends %.3f",
            *(name, scores["overall"], scores["column_shapes"], scores["column_pair_trends"]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
