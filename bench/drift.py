"""`python -m bench.drift`: the drift watch's figures.

Against the running Postgres (a fresh database per part, dropped afterwards): the time for
one window of `--rows` live scored rows (default 1,000,000), phase by phase; the detection
delay, in windows, of each fraud-like shift (TRANSFER amounts times five, the type mix,
a burst of new users); and the drifted windows and alarms over a stable run. Traffic is
the toy stream of testkit (a reference stream, and live streams drawn like it)."""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from fraudops import drift
from fraudops.db import connect
from fraudops.params import load_params
from fraudops.settings import load_settings
from jobs import drift_watch
from testkit import drift_traffic as traffic
from testkit.transactions import START

REFERENCE_ROWS = 200_000
WINDOW_DAYS = 0.5
SHIFT_DAY = 8


def one_big_window(server_url: str, root: Path, spec: dict, params: dict, n: int) -> None:
    """All `n` rows scored inside one window: each phase of the job, timed once."""
    live = traffic.live_stream(n, seed=3, days=3)
    rows = traffic.scored_rows(live, spec)
    with traffic.seeded_database(server_url, rows) as url:
        end = traffic.window_end(3).to_pydatetime() + timedelta(seconds=1)
        start = traffic.window_end(0).to_pydatetime()
        params = {**params, "window_minutes": (end - start).total_seconds() / 60}
        model_dir, spec = drift_watch.served_model(root)
        reference = drift.read_reference(model_dir)
        conn = connect(url)
        t0 = time.perf_counter()
        frame = drift_watch.read_window(conn, start, end)
        t1 = time.perf_counter()
        window, features = drift_watch.window_features(frame)
        t2 = time.perf_counter()
        stats = drift_watch.compare(reference, window, features, params)
        t3 = time.perf_counter()
        conn.close()
        with tempfile.TemporaryDirectory() as out:
            t4 = time.perf_counter()
            result = drift_watch.watch_window(url, root, end, params, Path(out))
            t5 = time.perf_counter()
        print(f"one window of {len(window):,} rows ({len(frame):,} read with history):")
        print(f"  read (COPY to pandas) {t1 - t0:6.2f} s")
        print(f"  batch features        {t2 - t1:6.2f} s")
        print(f"  statistics            {t3 - t2:6.2f} s ({len(stats['features'])} features)")
        print(f"  whole job (read, judge, store, JSON + HTML + gauges) {t5 - t4:6.2f} s")
        assert result["rows"] == len(window)


def windows(server_url: str, root: Path, spec: dict, params: dict, kind: str, count: int):
    """Summaries of `count` windows from SHIFT_DAY on, the stream shifted there (or not)."""
    live = traffic.live_stream(REFERENCE_ROWS, seed=2)
    if kind != "stable":
        live = traffic.shift(live, kind, START + SHIFT_DAY * traffic.DAY)
    last = START + (SHIFT_DAY + count * WINDOW_DAYS) * traffic.DAY
    with (
        traffic.seeded_database(
            server_url, traffic.scored_rows(live[live["timestamp"] < last], spec)
        ) as url,
        tempfile.TemporaryDirectory() as out,
    ):
        ends = [traffic.window_end(SHIFT_DAY + WINDOW_DAYS * (i + 1)) for i in range(count)]
        return [
            drift_watch.watch_window(url, root, e.to_pydatetime(), params, Path(out)) for e in ends
        ]


def delays(server_url: str, root: Path, spec: dict, params: dict) -> None:
    k = int(params["consecutive_windows"])
    print(f"detection delay ({WINDOW_DAYS * 24:.0f} h windows, K = {k}; window 1 is the first "
          "shifted one):")  # fmt: skip
    for kind in ("amount_x5", "type_mix", "new_users"):
        found = windows(server_url, root, spec, params, kind, k + 2)
        drifted = next((i + 1 for i, r in enumerate(found) if r["drifted"]), None)
        alarm = next((i + 1 for i, r in enumerate(found) if r["alarm"]), None)
        named = found[alarm - 1]["drifted_features"] if alarm else []
        print(f"  {kind:10s} first drifted window {drifted}, alarm at window {alarm}: {named}")


def stable(server_url: str, root: Path, spec: dict, params: dict, count: int) -> None:
    found = windows(server_url, root, spec, params, "stable", count)
    drifted = sum(bool(r["drifted"]) for r in found)
    alarms = sum(r["alarm"] for r in found)
    worst = max(r["score_psi"] for r in found)
    print(f"stable run: {count} windows, {drifted} drifted, {alarms} alarms "
          f"(worst score PSI {worst:.3f})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stable-windows", type=int, default=40)
    args = parser.parse_args(argv)
    server_url = load_settings().with_local_services().database_url
    params = load_params(Path("params.yaml"), "monitoring")
    params["window_minutes"] = WINDOW_DAYS * 24 * 60
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "serving"
        spec = traffic.publish_reference_model(root, "v1", REFERENCE_ROWS, seed=1)
        one_big_window(server_url, root, spec, params, args.rows)
        delays(server_url, root, spec, params)
        stable(server_url, root, spec, params, args.stable_windows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
