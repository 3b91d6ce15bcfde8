"""How good the synthetic rows are: SDV's quality report per class, computed on the
canonical columns (reference rows vs as many synthetic rows)."""

from __future__ import annotations

import warnings

import pandas as pd

from training.synthesizer.copula import sample_segment, table_metadata
from training.synthesizer.representation import CLASSES, decode_rows

QUALITY_NUMERIC = (
    "hour",
    "amount",
    "old_balance_orig",
    "new_balance_orig",
    "old_balance_dest",
    "new_balance_dest",
)


def canonical_sample(segments: dict, label: int, type_counts: dict[str, int], seed: int):
    """Synthetic rows of one class in canonical columns (+ hour), per-type counts given."""
    parts = []
    for i, (kind, n) in enumerate(sorted(type_counts.items())):
        if (label, kind) in segments and n > 0:
            values = decode_rows(sample_segment(segments[(label, kind)], n, seed + i), kind)
            parts.append(pd.DataFrame({"type": kind, **values}))
    return pd.concat(parts, ignore_index=True)


def _quality_view(rows: pd.DataFrame) -> pd.DataFrame:
    view = rows[["type", *QUALITY_NUMERIC[1:], "is_unauthorized_overdraft"]].copy()
    view.insert(1, "hour", (rows["timestamp"].to_numpy() // 3600) % 24)
    return view.reset_index(drop=True)


def quality_report(train: pd.DataFrame, segments: dict, rows: int, seed: int) -> dict:
    """SDV's quality report per class: reference rows vs as many synthetic rows."""
    from sdv.evaluation import evaluate_quality

    out = {}
    for label, name in CLASSES.items():
        kinds = [k for (c, k) in segments if c == label]
        real = train[(train["is_fraud"] == label) & train["type"].isin(kinds)]
        if real.empty:
            continue
        real = _quality_view(real.sample(min(len(real), rows), random_state=seed))
        synthetic = canonical_sample(segments, label, real["type"].value_counts().to_dict(), seed)
        synthetic = synthetic[real.columns]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = evaluate_quality(
                real, synthetic, table_metadata(real.columns, QUALITY_NUMERIC), verbose=False
            )
        properties = report.get_properties().set_index("Property")["Score"]
        shapes = report.get_details("Column Shapes").set_index("Column")["Score"]
        out[name] = {
            "overall": round(float(report.get_score()), 4),
            "column_shapes": round(float(properties["Column Shapes"]), 4),
            "column_pair_trends": round(float(properties["Column Pair Trends"]), 4),
            "columns": {c: round(float(s), 4) for c, s in shapes.items()},
            "rows_compared": len(real),
        }
    return out
