"""The demo's replay through the real live loop looks like what the model was evaluated on.

A trained tiny project's held-out set goes through `scripts/replay.py` into the gRPC server,
Kafka, the stream scorer (with its Redis feature state) and Postgres. The replayed traffic's
band mix is the held-out band mix the export published beside the model, and the drift watch
over the window holding nothing but the replay finds no feature drifted: the replay keeps
the time line the velocity features were trained and evaluated on, and each row's location
(an address the server enriches back to the row's country and kind)."""

from __future__ import annotations

import pytest

from fraudops.bands import BANDS
from testkit.replay_loop import band_mix, drift_report, live_loop, replay

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

BAND_POINTS = 0.03  # "within a few points" of the held-out share, per band


def test_the_replay_keeps_the_held_out_band_mix_and_no_feature_drifts(
    repro, postgres_server_url, kafka_settings, tmp_path
):
    project = repro[0]
    reference = project / "data" / "reference"
    args = ("--source", str(reference / "holdout.parquet"), "--history",
            str(reference / "train.parquet"), "--rate", "400", "--max", "5000")  # fmt: skip
    with live_loop(project / "models" / "serving", tmp_path, postgres_server_url,
                   kafka_settings) as settings:  # fmt: skip
        sent = replay(settings, *args)
        mix = band_mix(settings)
        report = drift_report(settings, project / "params.yaml", tmp_path / "drift")
    assert sent > 1000 and report["rows"] == sent  # the window is the replay, all of it
    held_out = report["bands"]["reference"]
    for band in BANDS:
        assert abs(mix.get(band, 0.0) - held_out[band]) <= BAND_POINTS, (mix, held_out)
    psi = {name: round(s["psi"], 3) for name, s in report["features"].items()}
    assert report["drifted_features"] == [], psi
    assert report["drifted"] is False, (report["score"]["psi"], report["bands"])
    assert report["skew"]["mismatches"] == 0, report["skew"]
