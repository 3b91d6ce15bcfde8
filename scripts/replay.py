"""Replay held-out transactions through `FraudIngestion.SendTransaction`, so the analyst
console's live screens move during the demo, with traffic that looks like what the model
was trained and evaluated on.

    python scripts/replay.py [--source data/reference/holdout.parquet]
        [--history data/reference/train.parquet] [--rate 20] [--max 20000] [--seed 0]

Event time is kept. The velocity features (a user's transactions in the last hour and day,
the time since the previous one) are computed from each transaction's own timestamp, so the
replay sends the reference's own time line, not "now": a user's days of history sent with
the current time would pile into minutes and look nothing like training or the held-out set.

- Whole users: a seeded sample of the held-out users, as many as fit in --max rows, with
  every one of their rows, so the rows cover the set's whole time span, not its first hours.
- Their history first: each sampled user's rows of the week before the held-out set (from
  the reference's training part, --history; as far back as a feature looks). Without it
  every user's first held-out row would be its first ever, which on a short held-out span
  is a large share of the rows and unlike the training data; with it the held-out rows are
  scored as a running system scores them. The held-out set is featurized without that
  history, so the band mix published with the model is the cold-start one; the replayed
  mix stays within a few tenths of a point of it (tests/pipeline/test_replay.py).
- Moved by whole days: every timestamp moves by the same whole number of days (hour of day
  and spacing kept), the most that leaves the last event at or before now. The events lie
  in the past; the scorer takes them, and the features see them as they happened.
- Sent in event order at --rate per second; since the timestamps carry the time line, the
  pace changes no feature.
- A replay is one day's: transaction ids and accounts are derived from the shift in days. A
  re-run on the same day sends the same ids, which the feature state and
  scored_transactions count once (nothing new is scored). A run on a later day moves the
  time line again and plays its users as new accounts (user ids derived from the shift):
  otherwise yesterday's replay of the same users, overlapping in event time, would double
  their velocity.

Bounded by --max; stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pandas as pd

from fraudops.features import MAX_GAP_SECONDS
from fraudops.grpc_client import with_token
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from fraudops.schema import LABEL_COLUMN, LOCATION_COLUMNS, NUMERIC_COLUMNS
from fraudops.settings import Settings, load_settings

DAY = 86400


def with_history(held_out: pd.DataFrame, history: pd.DataFrame | None) -> pd.DataFrame:
    """The held-out rows after their users' rows of the week before the set begins (as far
    back as a feature looks), so a user's first held-out row is not its first ever."""
    if history is None or history.empty:
        return held_out
    start = int(held_out["timestamp"].min())
    recent = history[
        (history["timestamp"] >= start - MAX_GAP_SECONDS) & (history["timestamp"] < start)
        & history["user_id"].isin(held_out["user_id"].unique())
    ]  # fmt: skip
    return pd.concat([recent, held_out], ignore_index=True)


def sample_users(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Every row of whole users drawn in a seeded order, as many users as fit in
    `max_rows` rows (a user who would overflow is skipped, later smaller ones still fit)."""
    sizes = frame.groupby("user_id").size()
    sizes = sizes.iloc[np.random.default_rng(seed).permutation(len(sizes))]
    kept, total = [], 0
    for user, size in sizes.items():
        if total + size <= max_rows:
            kept.append(user)
            total += size
    return frame[frame["user_id"].isin(kept)]


def shift_days(last_ts: int, now: float) -> int:
    """The whole days to add so that the last event is at or before `now`."""
    return int((now - last_ts) // DAY)


def account_id(user_id: int, shift: int) -> int:
    """The user's account for the replay moved by `shift` days: a stable 62-bit id, so a
    later day's replay never shares a history with an earlier one's."""
    digest = hashlib.blake2b(f"{shift}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def replay_frame(
    held_out: pd.DataFrame, history: pd.DataFrame | None, max_rows: int, seed: int, now: float
) -> pd.DataFrame:
    """The rows to send, in event order: sampled users with their week of history,
    timestamps moved by whole days, ids and accounts of that shift (`transaction_id` names
    the shift and the source transaction)."""
    shift = shift_days(int(held_out["timestamp"].max()), now)
    rows = sample_users(with_history(held_out, history), max_rows, seed)
    rows = rows.sort_values("timestamp", kind="stable")
    accounts = {u: account_id(int(u), shift) for u in rows["user_id"].unique()}
    return rows.assign(
        transaction_id=[f"replay-{shift}d-{t}" for t in rows["transaction_id"]],
        user_id=rows["user_id"].map(accounts).astype(np.int64),
        timestamp=rows["timestamp"].astype(np.int64) + shift * DAY,
    ).reset_index(drop=True)


def with_addresses(frame: pd.DataFrame, database: Path, seed: int) -> pd.DataFrame:
    """The reference keeps each row's IP country and kind, never an address: each row gets
    one that the server enriches back to them (`training.lib.locations.frame_addresses`)."""
    if "ip_country" not in frame.columns:
        return frame
    if not Path(database).exists():
        print(f"replay: {database} is missing (make geoip-db): every address unknown", flush=True)
        return frame
    from fraudops.geoip import GeoIpDatabase
    from training.lib.locations import frame_addresses

    rng = np.random.default_rng(seed)
    return frame.assign(ip_address=frame_addresses(frame, GeoIpDatabase(Path(database)), rng))


def requests(frame: pd.DataFrame) -> Iterator[fraud_pb2.TransactionRequest]:
    """One TransactionRequest per row, as the row says."""
    for row in frame.itertuples(index=False):
        values = row._asdict()
        yield fraud_pb2.TransactionRequest(
            transaction_id=str(values["transaction_id"]),
            user_id=int(values["user_id"]),
            timestamp=int(values["timestamp"]),
            type=str(values["type"]),
            dest_id=int(values.get("dest_id") or 0),
            channel="replay",
            **{c: float(values[c]) for c in NUMERIC_COLUMNS},
            # The row's location as the reference holds it; not a string (absent, NaN) is
            # unknown, as from a producer that does not send it.
            **{c: v if isinstance(v := values.get(c), str) else "" for c in LOCATION_COLUMNS},
        )


@contextlib.contextmanager
def ingestion(settings: Settings) -> Iterator[Callable[[fraud_pb2.TransactionRequest], None]]:
    """SendTransaction on the configured server as the configured caller (its token on
    every call): the one place the channel is opened."""
    with grpc.insecure_channel(f"{settings.grpc_host}:{settings.grpc_port}") as channel:
        stub = fraud_pb2_grpc.FraudIngestionStub(with_token(channel, settings.client_token))
        yield lambda request: stub.SendTransaction(request, timeout=10)


def send_all(frame: pd.DataFrame, send, rate: float, stopping: list[int]) -> tuple[int, int]:
    """Send every row at `rate` per second until done or `stopping`; (sent, refused)."""
    sent = failed = 0
    for request in requests(frame):
        if stopping:
            break
        started = time.monotonic()
        try:
            send(request)
            sent += 1
        except grpc.RpcError as err:
            failed += 1
            print(f"replay: {request.transaction_id}: {err.code().name}", file=sys.stderr)
        if sent % 500 == 0:
            print(f"replay: {sent} sent, {failed} refused", flush=True)
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    return sent, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("data/reference/holdout.parquet"))
    parser.add_argument(
        "--history",
        type=Path,
        default=Path("data/reference/train.parquet"),
        help="the reference before the held-out set (its users' history)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="transactions per second")
    parser.add_argument("--max", type=int, default=20_000, help="rows sent at most")
    parser.add_argument("--seed", type=int, default=0, help="which users are sampled")
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"replay: {args.source} is missing (run the pipeline first)", file=sys.stderr)
        return 1
    held_out, history = (
        pd.read_parquet(p).drop(columns=[LABEL_COLUMN], errors="ignore") if p.exists() else None
        for p in (args.source, args.history)
    )
    if history is None:
        print(f"replay: {args.history} is missing: users start without history", flush=True)
    frame = replay_frame(held_out, history, args.max, args.seed, time.time())
    frame = with_addresses(frame, load_settings().geoip_db, args.seed)
    first, last = (time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) for t in
                   (frame["timestamp"].min(), frame["timestamp"].max()))  # fmt: skip
    print(f"replay: {len(frame)} rows of {frame['user_id'].nunique()} users, "
          f"events {first} to {last} UTC", flush=True)  # fmt: skip
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    with ingestion(load_settings()) as send:
        sent, failed = send_all(frame, send, args.rate, stopping)
    print(f"replay: done, {sent} sent, {failed} refused")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
