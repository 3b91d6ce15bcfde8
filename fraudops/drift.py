"""Drift statistics shared by export (which profiles the champion's training data) and the
drift watch job (which compares a window of live traffic with that profile).

The reference profile is a small JSON sidecar (`drift_reference.json`) published beside
model.json, so the job needs only the served model directory: per feature, the quantile
bin edges of the training features and the share of training rows in each bin, plus a
fixed-size sample for the two-sample statistics; the same for the model's scores on its
held-out data, and the band mix those scores give under the model's thresholds. Fraud moves
within segments (one type's amounts, the type mix) as much as across all traffic, so the
profile also holds the type mix and each type's amount distribution.

Population stability index, on the reference's bins (a floor keeps empty bins finite):
    PSI = sum_i (live_i - ref_i) * ln(live_i / ref_i)
Below 0.1 is stable, 0.1-0.2 a moderate shift, above 0.2 a shift worth acting on."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial import distance

from fraudops.bands import BANDS, bands_for
from fraudops.features import FEATURE_NAMES
from fraudops.schema import TRANSACTION_TYPES

REFERENCE_FILE = "drift_reference.json"
PROPORTION_FLOOR = 1e-4  # an empty bin counts as this share: PSI stays finite


def bin_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Interior quantile edges of `values`, each an observed value; repeated quantiles
    (discrete features) merge, so a 0/1 flag gets the bins (-inf, 0] and (0, inf)."""
    qs = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.unique(np.quantile(np.asarray(values, dtype=np.float64), qs, method="lower"))


def proportions(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Share of `values` in each bin (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """Population stability index of two bin-share vectors (formula in the module doc)."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), PROPORTION_FLOOR)
    cur = np.maximum(np.asarray(live, dtype=np.float64), PROPORTION_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _sample(values: np.ndarray, size: int, rng: np.random.Generator) -> list[float]:
    take = values if len(values) <= size else rng.choice(values, size, replace=False)
    return np.sort(take).astype(float).tolist()


def profile_column(
    values: np.ndarray, n_bins: int, sample_size: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Bin edges, reference shares and a sorted sample of one column."""
    values = np.asarray(values, dtype=np.float64)
    edges = bin_edges(values, n_bins)
    return {
        "edges": edges.tolist(),
        "proportions": proportions(values, edges).tolist(),
        "sample": _sample(values, sample_size, rng),
    }


_TYPE_COLUMNS = [FEATURE_NAMES.index(f"type_{t}") for t in TRANSACTION_TYPES]
_AMOUNT = FEATURE_NAMES.index("log_amount")


def types_of(features: np.ndarray) -> np.ndarray:
    """The transaction type of each feature row, from its one-hot columns."""
    return np.asarray(TRANSACTION_TYPES)[np.argmax(features[:, _TYPE_COLUMNS], axis=1)]


def type_shares(features: np.ndarray) -> dict[str, float]:
    types = types_of(features)
    return {t: float(np.mean(types == t)) if len(types) else 0.0 for t in TRANSACTION_TYPES}


def segments(features: np.ndarray) -> dict[str, np.ndarray]:
    """`log_amount[TYPE]`: the amounts of each type, the segments the profile holds."""
    types = types_of(features)
    return {f"log_amount[{t}]": features[types == t, _AMOUNT] for t in TRANSACTION_TYPES}


def build_reference(
    features: np.ndarray,
    scores: np.ndarray,
    thresholds: dict[str, float],
    n_bins: int = 10,
    sample_size: int = 5000,
    seed: int = 0,
) -> dict[str, Any]:
    """The reference profile: training features (N, F) in FEATURE_NAMES order, and the
    model's scores on its held-out data with the band shares they give."""
    rng = np.random.default_rng(seed)
    bands = np.bincount(bands_for(scores, thresholds), minlength=len(BANDS)) / max(len(scores), 1)
    return {
        "rows": int(len(features)),
        "score_rows": int(len(scores)),
        "features": {
            name: profile_column(features[:, i], n_bins, sample_size, rng)
            for i, name in enumerate(FEATURE_NAMES)
        },
        "segments": {
            name: profile_column(values, n_bins, sample_size, rng)
            for name, values in segments(features).items()
            if len(values)
        },
        "type_mix": type_shares(features),
        "score": profile_column(scores, n_bins, sample_size, rng),
        "bands": dict(zip(BANDS, bands.astype(float).tolist(), strict=True)),
    }


def write_reference(model_dir: Path, reference: dict[str, Any]) -> Path:
    path = Path(model_dir) / REFERENCE_FILE
    path.write_text(json.dumps(reference, separators=(",", ":")))
    return path


def read_reference(model_dir: Path) -> dict[str, Any]:
    """The profile published with a model; FileNotFoundError names a model without one."""
    return json.loads((Path(model_dir) / REFERENCE_FILE).read_text())


def compare_column(reference: dict[str, Any], live: np.ndarray) -> dict[str, Any]:
    """PSI and Jensen-Shannon distance on the reference's bins; KS and Wasserstein against
    the reference sample where both sides have more than one distinct value (a one-hot or
    a flag is a proportion, which the bins already compare exactly)."""
    live = np.asarray(live, dtype=np.float64)
    shares = proportions(live, reference["edges"])
    ref_shares = np.asarray(reference["proportions"])
    out: dict[str, Any] = {
        "psi": psi(ref_shares, shares),
        "js_distance": float(distance.jensenshannon(ref_shares, shares, base=2)),
        "live_proportions": shares.tolist(),
    }
    sample = np.asarray(reference["sample"])
    if len(live) and len(reference["edges"]) > 2:
        ks = stats.ks_2samp(sample, live)
        out["ks_statistic"] = float(ks.statistic)
        out["ks_pvalue"] = float(ks.pvalue)
        out["wasserstein"] = float(stats.wasserstein_distance(sample, live))
    return out


def band_shares(bands: Sequence[str]) -> dict[str, float]:
    names, counts = np.unique(np.asarray(bands, dtype=str), return_counts=True)
    total = max(int(counts.sum()), 1)
    found = dict(zip(names.tolist(), counts.tolist(), strict=True))
    return {b: found.get(b, 0) / total for b in BANDS}


def next_run(previous_run: int, drifted: bool, k: int) -> tuple[int, bool]:
    """(drifted windows in a row ending at this one, alarm) given the run before it. The
    alarm goes off when a run reaches exactly `k`: one noisy window does not retrain, and a
    drift that persists alarms once per run rather than every window."""
    run = previous_run + 1 if drifted else 0
    return run, k >= 1 and run == k
