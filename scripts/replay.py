"""Replay held-out transactions through `FraudIngestion.SendTransaction` at a modest rate, so
the analyst console's live screens move during the demo.

    python scripts/replay.py [--source data/reference/holdout.parquet] [--rate 20] [--max 20000]

Each transaction gets a fresh id (a replay must not collide with earlier ones) and a timestamp
of now, in the order of the file; the rest of each row is sent as it is. Bounded by --max and
stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from pathlib import Path

import grpc
import pandas as pd

from fraudops.grpc_client import with_token
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from fraudops.schema import LABEL_COLUMN, NUMERIC_COLUMNS
from fraudops.settings import load_settings


def requests(frame: pd.DataFrame, run: str):
    """One TransactionRequest per row, with a fresh id and the current time."""
    for i, row in enumerate(frame.itertuples(index=False)):
        values = row._asdict()
        yield fraud_pb2.TransactionRequest(
            transaction_id=f"replay-{run}-{i}",
            user_id=int(values["user_id"]),
            timestamp=int(time.time()),
            type=str(values["type"]),
            dest_id=int(values.get("dest_id") or 0),
            channel="replay",
            **{c: float(values[c]) for c in NUMERIC_COLUMNS},
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("data/reference/holdout.parquet"))
    parser.add_argument("--rate", type=float, default=20.0, help="transactions per second")
    parser.add_argument("--max", type=int, default=20_000, help="stop after this many")
    args = parser.parse_args(argv)
    if not args.source.exists():
        print(f"replay: {args.source} is missing (run the pipeline first)", file=sys.stderr)
        return 1
    settings = load_settings()
    frame = pd.read_parquet(args.source).drop(columns=[LABEL_COLUMN], errors="ignore")
    frame = frame.sort_values("timestamp", kind="stable").head(args.max)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    target = f"{settings.grpc_host}:{settings.grpc_port}"
    sent = failed = 0
    with grpc.insecure_channel(target) as channel:
        stub = fraud_pb2_grpc.FraudIngestionStub(with_token(channel, settings.client_token))
        for request in requests(frame, uuid.uuid4().hex[:6]):
            if stopping:
                break
            started = time.monotonic()
            try:
                stub.SendTransaction(request, timeout=10)
                sent += 1
            except grpc.RpcError as err:
                failed += 1
                print(f"replay: {request.transaction_id}: {err.code().name}", file=sys.stderr)
            if sent % 500 == 0:
                print(f"replay: {sent} sent, {failed} refused", flush=True)
            time.sleep(max(0.0, 1.0 / args.rate - (time.monotonic() - started)))
    print(f"replay: done, {sent} sent, {failed} refused")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
