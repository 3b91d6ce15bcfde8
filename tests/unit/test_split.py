"""The pipeline's one time split (reference's holdout and featurize's valid set): where the
cut falls, and which side a row stamped on it, or sharing a timestamp, goes to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.lib.split import split_by_time, time_cutoff


def rows(timestamps) -> pd.DataFrame:
    stamps = list(timestamps)
    return pd.DataFrame({"timestamp": stamps, "row": range(len(stamps))})


def test_rows_stamped_on_the_cut_go_late_together():
    # Four seconds, two rows each: the last quarter starts exactly at second 3.
    early, late = split_by_time(rows([0, 0, 1, 1, 2, 2, 3, 3]), 0.25, "x")
    assert early["timestamp"].tolist() == [0, 0, 1, 1, 2, 2]
    assert late["timestamp"].tolist() == [3, 3]


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
def test_equal_timestamps_never_straddle_the_cut(fraction):
    frame = rows([0, 1, 1, 1, 1, 2, 2, 3, 4, 4])
    try:
        early, late = split_by_time(frame, fraction, "x")
    except ValueError:
        return  # an empty side is refused, never split inside a timestamp
    assert set(early["timestamp"]).isdisjoint(late["timestamp"])
    assert early["timestamp"].max() < late["timestamp"].min()


def test_the_span_counts_the_last_second():
    # Seconds 0..9 span ten seconds; the last quarter (2.5 s) starts at 7.5.
    assert time_cutoff(0, 9, 0.25) == 7.5
    early, late = split_by_time(rows(range(10)), 0.25, "x")
    assert late["timestamp"].tolist() == [8, 9]
    assert len(early) == 8


def test_whole_hours_are_cut_on_an_hour():
    stamps = np.r_[np.arange(0, 4 * 3600, 7), 4 * 3600 - 1]
    early, late = split_by_time(rows(stamps), 0.25, "x")
    assert early["timestamp"].max() < 3 * 3600 <= late["timestamp"].min()


def test_keeps_row_order_with_a_fresh_index():
    frame = rows([5, 0, 9, 1, 8]).set_index(pd.Index([10, 11, 12, 13, 14]))
    early, late = split_by_time(frame, 0.5, "x")
    assert early["row"].tolist() == [1, 3] and late["row"].tolist() == [0, 2, 4]
    assert early.index.tolist() == [0, 1] and late.index.tolist() == [0, 1, 2]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_refuses_a_meaningless_fraction_naming_the_parameter(fraction):
    with pytest.raises(ValueError, match="featurize.valid_fraction"):
        split_by_time(rows(range(10)), fraction, "featurize.valid_fraction")


def test_refuses_an_empty_side_naming_the_parameter():
    with pytest.raises(ValueError, match="reference.holdout_fraction.*empty side"):
        split_by_time(rows([7, 7, 7]), 0.5, "reference.holdout_fraction")
