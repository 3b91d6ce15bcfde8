"""The one time split of the pipeline: reference (train vs held-out reference) and featurize
(train vs valid) cut the same way, so the late side always looks like the future.

The rule: a timestamp is a whole second and stands for that second, so rows stamped t0..t1
span t1 - t0 + 1 seconds (rows filling whole simulator hours are cut on an hour). The cut
lies `late_fraction` of that span before its end; a row stamped at or after the cut is
late. The cut compares timestamps only, so rows with equal timestamps always land on the
same side, the late one when they sit exactly on the cut."""

from __future__ import annotations

import pandas as pd


def time_cutoff(first: int, last: int, late_fraction: float) -> float:
    """The first instant of the late side, for rows stamped first..last."""
    return first + (1.0 - late_fraction) * (last - first + 1)


def split_by_time(
    frame: pd.DataFrame, late_fraction: float, name: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(early, late) rows of `frame`, each in its original order with a fresh index.

    `name` is the parameter the fraction comes from, for the error messages. ValueError
    when the fraction is not in (0, 1) or when a side would be empty."""
    if not 0.0 < late_fraction < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {late_fraction}")
    timestamps = frame["timestamp"].to_numpy()
    cutoff = time_cutoff(int(timestamps.min()), int(timestamps.max()), late_fraction)
    late = timestamps >= cutoff
    early_rows, late_rows = frame.loc[~late], frame.loc[late]
    if early_rows.empty or late_rows.empty:
        raise ValueError(f"{name}: the time split at {cutoff:.0f} leaves an empty side")
    return early_rows.reset_index(drop=True), late_rows.reset_index(drop=True)
