"""What every benchmark part shares: transactions and statistics. Ports, waits, processes,
fresh topics and databases, and the tiny models come from testkit.stack, the same code
the tests run (so the benchmark runs as `python -m bench.run` from the repository root)."""

from __future__ import annotations

import contextlib
import ipaddress
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fraudops.proto_gen.fraud.v1 import fraud_pb2

# The benchmark's server and scorer processes: quiet logs, and time to drain on SIGTERM.
LOG_LEVEL = "WARNING"
STOP_S = 120


@dataclass
class Stats:
    """Latencies in seconds, summarised in microseconds."""

    samples: list[float]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) * 1e6 if self.samples else float("nan")

    def summary(self) -> str:
        return (
            f"p50 {self.pct(50):7.0f} µs  p99 {self.pct(99):7.0f} µs  max {self.pct(100):7.0f} µs"
        )


@contextlib.contextmanager
def workspace(server_url: str, prefix: str) -> Iterator[tuple[Path, Path, str]]:
    """A scratch directory with the tiny models built and v1 published in `serving/`, and a
    fresh database on `server_url`: (directory, built models, database URL)."""
    from fraudops.modelspec import publish
    from testkit.stack import build_models, fresh_database

    with (
        tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp,
        fresh_database(server_url, "fraudops_bench") as url,
    ):
        work = Path(tmp)
        built = build_models(work / "built", timeout=900)
        publish(built / "v1", work / "serving", "v1")
        yield work, built, url


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def transactions(
    n: int, users: int, seed: int, prefix: str, located: str = ""
) -> list[fraud_pb2.TransactionRequest]:
    """Plausible transactions spread over `users` users, in time order; `located` (one of
    ADDRESS_MIXES): each with a client IP address and a card country, as the enrichment
    benchmark sends them."""
    rng = np.random.default_rng(seed)
    types = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
    amount = np.round(rng.lognormal(7.5, 1.2, n), 2) + 0.01
    old = np.round(rng.lognormal(9.0, 1.5, n), 2)
    user = rng.integers(1, users + 1, n)
    kind = rng.integers(0, 5, n)
    txs = [
        fraud_pb2.TransactionRequest(
            transaction_id=f"{prefix}-{i}",
            user_id=int(user[i]),
            amount=float(amount[i]),
            timestamp=1_700_000_000 + i // 10,
            type=types[kind[i]],
            old_balance_orig=float(old[i]),
            new_balance_orig=float(max(old[i] - amount[i], 0)),
            old_balance_dest=0.0,
            new_balance_dest=float(amount[i]),
            dest_id=int(user[i]) + 7,
            channel="bench",
        )  # fmt: skip
        for i in range(n)
    ]
    if located:
        ADDRESS_MIXES[located](txs, user, rng)
    return txs


def _locate(txs: list, user: np.ndarray, rng: np.random.Generator) -> None:
    """The worst case for enrichment: each transaction an address of its user's (four
    random public ones each, one in ten IPv6) and a card country; over many users, nearly
    every address is one the scorer has not seen."""
    ids = np.unique(user)
    v4 = rng.integers(1 << 24, 223 << 24, size=(len(ids), 4))
    v6 = rng.integers(0, 1 << 62, size=(len(ids), 4))
    slot = {int(u): k for k, u in enumerate(ids)}
    for tx, pick, six in zip(txs, rng.integers(0, 4, len(txs)), rng.random(len(txs)) < 0.1,
                             strict=True):  # fmt: skip
        k = slot[tx.user_id]
        if six:
            tx.ip_address = str(ipaddress.IPv6Address((0x2A00 << 112) | int(v6[k, pick])))
        else:
            tx.ip_address = str(ipaddress.IPv4Address(int(v4[k, pick])))
        tx.card_country = ("DE", "US", "FR", "BR")[tx.user_id % 4]


def _locate_as_simulated(txs: list, user: np.ndarray, rng: np.random.Generator) -> None:
    """Addresses as the simulator draws them (training.lib.locations, its default shares):
    each user a home country and two addresses of real ranges there, paying from one of
    them, or while travelling from another country's range, or from no address or a
    private one; the card issued at home. Users who pay again reuse their addresses, so
    the scorer mostly enriches an address it has seen."""
    from fraudops.geoip import GeoIpDatabase
    from tests.helpers.geoip import GEOIP_DB
    from training.lib.locations import ABROAD, LocationMix, addresses, country_networks

    mix = LocationMix()
    nets = country_networks(GeoIpDatabase(GEOIP_DB), tuple(sorted(set(mix.homes) | set(ABROAD))),
                            rng)  # fmt: skip
    ids, user_of = np.unique(user, return_inverse=True)
    homes = sorted(c for c in mix.homes if c in nets)
    weights = np.array([mix.homes[c] for c in homes])
    home = rng.choice(homes, size=len(ids), p=weights / weights.sum())
    own = np.stack([addresses(nets, home, rng) for _ in range(2)], axis=1)
    ips = own[user_of, rng.integers(0, 2, len(txs))]
    roll = rng.random(len(txs))
    travel = roll < mix.legit_travel
    unknown = (roll >= mix.legit_travel) & (roll < mix.legit_travel + mix.legit_unknown)
    private = (roll >= mix.legit_travel + mix.legit_unknown) & (
        roll < mix.legit_travel + mix.legit_unknown + mix.legit_private
    )
    away = sorted(c for c in ABROAD if c in nets)
    ips[travel] = addresses(nets, rng.choice(away, size=int(travel.sum())), rng)
    n_private = int(private.sum())
    ips[private] = addresses(nets, np.full(n_private, ""), rng, np.full(n_private, "private"))
    ips[unknown] = ""
    for tx, ip, k in zip(txs, ips.tolist(), user_of.tolist(), strict=True):
        tx.ip_address, tx.card_country = ip, str(home[k])


def seen_share(txs: list) -> float:
    """The share of transactions whose address came earlier in `txs` (or is empty): what a
    fresh scorer's lookup cache can answer at best."""
    seen: set[str] = set()
    hits = 0
    for tx in txs:
        hits += tx.ip_address in seen or not tx.ip_address
        seen.add(tx.ip_address)
    return hits / len(txs) if txs else float("nan")


# How the located transactions' addresses are drawn: the realistic mix first (the one the
# enrichment target is judged on), then the worst case.
ADDRESS_MIXES = {"realistic": _locate_as_simulated, "all-new": _locate}
