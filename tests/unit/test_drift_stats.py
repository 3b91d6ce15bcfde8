"""The drift statistics: PSI on the reference's quantile bins, and the alarm after K
consecutive drifted windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fraudops import drift


def test_psi_of_identical_shares_is_zero():
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_psi_matches_the_formula():
    ref, live = [0.5, 0.5], [0.8, 0.2]
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert drift.psi(ref, live) == pytest.approx(expected)


def test_psi_is_finite_when_a_bin_empties():
    assert math.isfinite(drift.psi([0.5, 0.5], [1.0, 0.0]))
    assert drift.psi([0.5, 0.5], [1.0, 0.0]) > 1.0


def test_quantile_bins_hold_equal_shares_of_the_reference():
    values = np.random.default_rng(0).normal(size=100_000)
    edges = drift.bin_edges(values, 10)
    assert len(edges) == 9
    np.testing.assert_allclose(drift.proportions(values, edges), 0.1, atol=1e-3)


def test_a_flag_gets_one_bin_per_value():
    flags = np.array([0.0] * 90 + [1.0] * 10)
    edges = drift.bin_edges(flags, 10)
    assert edges.tolist() == [0.0]
    assert drift.proportions(flags, edges).tolist() == [0.9, 0.1]


def test_same_distribution_is_stable_and_a_shift_is_not():
    rng = np.random.default_rng(1)
    reference = drift.profile_column(rng.normal(size=50_000), 10, 2000, rng)
    same = drift.compare_column(reference, rng.normal(size=5000))
    shifted = drift.compare_column(reference, rng.normal(loc=1.0, size=5000))
    assert same["psi"] < 0.02
    assert shifted["psi"] > 0.2
    assert shifted["ks_statistic"] > same["ks_statistic"]
    assert shifted["wasserstein"] > same["wasserstein"]
    assert 0.0 <= same["js_distance"] < shifted["js_distance"] <= 1.0


@pytest.mark.parametrize(
    ("history", "k", "fires"),
    [
        ([True], 3, False),
        ([True, True], 3, False),
        ([True, True, True], 3, True),
        ([False, True, True, True], 3, True),
        ([True, True, True, True], 3, False),  # the run already alarmed
        ([True, False, True, True], 3, False),  # a stable window breaks the run
        ([True, True, False, True, True, True], 3, True),
        ([False], 1, False),
        ([False, True], 1, True),
        ([], 3, False),
        ([True] * 10, 3, False),
    ],
)
def test_alarm_after_k_consecutive_drifted_windows(history, k, fires):
    run, alarm = 0, False
    for drifted in history:
        run, alarm = drift.next_run(run, drifted, k)
    assert alarm is fires
    trailing = [*[False], *history]
    assert run == len(trailing) - 1 - max(i for i, d in enumerate(trailing) if not d)


def test_band_shares_count_every_band():
    shares = drift.band_shares(["ALLOW", "ALLOW", "BLOCK", "ALLOW"])
    assert shares == {"ALLOW": 0.75, "CHALLENGE": 0.0, "BLOCK": 0.25}


def test_label_metrics_judge_the_flagged_bands_by_the_labels_given():
    import pandas as pd

    from jobs.drift_watch import label_metrics

    live = pd.DataFrame(
        {
            "band": ["BLOCK", "BLOCK", "CHALLENGE", "ALLOW", "ALLOW", "CHALLENGE"],
            "label": ["FRAUD", "LEGIT", "FRAUD", "FRAUD", None, None],
        }
    )
    found = label_metrics(live)
    assert (found["labelled"], found["fraud"]) == (4, 3)
    assert found["precision_block"] == 0.5 and found["precision_challenge"] == 1.0
    assert found["recall_flagged"] == pytest.approx(2 / 3)
    assert label_metrics(live.assign(label=None))["recall_flagged"] is None
