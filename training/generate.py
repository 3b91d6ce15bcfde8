"""Stage `generate`: sample a synthetic batch of transactions from the fitted synthesizer.

`generate.n_rows` rows with a `generate.fraud_rate` share of fraud (exact up to one fraud
episode), seeded. Episodes are drawn from the sequencer's templates, their slots filled
with rows sampled (in chunks, with a progress bar) from the (class, type) copulas, then
placed in time and given users and payees (see training/synthesizer/__init__.py for
the approach). The output meets the data contract: exactly TRANSACTION_COLUMNS, non-negative
finite balances, positive amounts, known types, unique transaction ids, sorted by
timestamp."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from fraudops.geoip import GeoIpDatabase
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.schema import (
    BALANCE_COLUMNS,
    LOCATION_DATA_COLUMNS,
    TRANSACTION_COLUMNS,
    TRANSACTION_TYPES,
)
from training.lib.locations import LocationMix, add_locations
from training.lib.simulator import sequential_ids, unique_ids
from training.synthesizer.bundle import SynthesizerBundle, load_bundle
from training.synthesizer.copula import quiet_libraries, sample_segment
from training.synthesizer.representation import CLASSES, decode_rows

log = logging.getLogger("training.generate")

VALUE_COLUMNS = ("hour", "amount", *BALANCE_COLUMNS, "is_unauthorized_overdraft")


def draw_episodes(templates: dict, n_rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Slots of randomly drawn template episodes, exactly n_rows of them (the last episode
    may be cut short). Columns: episode (0..), type, offset, actor, dest_actor, rank."""
    table = pd.DataFrame({k: v for k, v in templates.items() if k != "n_episodes"})
    sizes = np.bincount(table["episode"].to_numpy())
    starts = np.cumsum(sizes) - sizes
    draws = np.zeros(0, dtype=np.int64)
    while sizes[draws].sum() < n_rows:
        more = int((n_rows - sizes[draws].sum()) / sizes.mean() * 1.1) + 10
        draws = np.concatenate([draws, rng.integers(0, len(sizes), more)])
    ends = np.cumsum(sizes[draws])
    draws = draws[: int(np.searchsorted(ends, n_rows)) + 1]
    size = sizes[draws]
    within = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    slots = table.iloc[np.repeat(starts[draws], size) + within].reset_index(drop=True)
    slots["episode"] = np.repeat(np.arange(len(draws)), size)
    return slots.iloc[:n_rows].reset_index(drop=True)


def fill_slots(slots: pd.DataFrame, bundle: SynthesizerBundle, label: int, rng, bar, chunk: int):
    """Canonical values for every slot, sampled from the slot's (class, type) copula in
    chunks; within an episode, rows of one type take the template's amount order."""
    values = {c: np.zeros(len(slots)) for c in VALUE_COLUMNS}
    kinds = slots["type"].to_numpy()
    episode, rank = slots["episode"].to_numpy(), slots["rank"].to_numpy()
    for kind in np.unique(kinds):
        pos = np.flatnonzero(kinds == kind)
        parts = []
        for start in range(0, len(pos), chunk):
            n = min(chunk, len(pos) - start)
            seed = int(rng.integers(2**31))
            parts.append(sample_segment(bundle.segments[(label, kind)], n, seed))
            bar.update(n)
        sampled = decode_rows(pd.concat(parts, ignore_index=True), kind)
        slot_order = pos[np.lexsort((rank[pos], episode[pos]))]
        row_order = np.lexsort((sampled["amount"], episode[pos]))
        for column in VALUE_COLUMNS:
            values[column][slot_order] = sampled[column][row_order]
    return values


def _actor_users(slots: pd.DataFrame, sequencer: dict, rng: np.random.Generator):
    """User index (into the customer population) of each slot's sender and linked payee
    (-1 when the payee is not an actor of the episode), and the population size.

    Legit episodes start with a customer drawn by activity (bootstrapped from the
    reference's episodes per customer); fraud episodes start with a random customer (the
    victim); later fraud actors are mules from a pool sized by the reference's reuse."""
    width = int(slots["actor"].max()) + 1
    key = slots["episode"].to_numpy() * width + slots["actor"].to_numpy()
    pairs, slot_pair = np.unique(key, return_inverse=True)
    actor, fraud = pairs % width, np.zeros(len(pairs), dtype=bool)
    fraud[slot_pair] = slots["label"].to_numpy() == 1
    activity = np.asarray(sequencer["episodes_per_customer"], dtype=float)
    n_legit_episodes = int(slots.loc[slots["label"] == 0, "episode"].nunique())
    n_users = max(2, round(n_legit_episodes / activity.mean()))
    weight = rng.choice(activity, n_users)
    user = rng.integers(0, n_users, len(pairs))
    starters = (actor == 0) & ~fraud
    user[starters] = rng.choice(n_users, int(starters.sum()), p=weight / weight.sum())
    mule_slots = (actor > 0) & fraud
    n_mules = max(1, min(n_users - 1, round(mule_slots.sum() / sequencer["mule_reuse"])))
    user[mule_slots] = rng.choice(rng.choice(n_users, n_mules, replace=False), mule_slots.sum())
    dest_actor = slots["dest_actor"].to_numpy()
    dest_key = slots["episode"].to_numpy() * width + np.maximum(dest_actor, 0)
    found = np.minimum(np.searchsorted(pairs, dest_key), len(pairs) - 1)
    linked = (dest_actor >= 0) & (pairs[found] == dest_key)
    return user[slot_pair], np.where(linked, user[found], -1), n_users


def _payees(kinds: np.ndarray, sequencer: dict, customer_ids, rng) -> np.ndarray:
    """Payee ids of the slots not paying an episode actor: a customer with the reference's
    probability for the type, else one of a per-type pool (merchants, cash agents)."""
    dest = np.zeros(len(kinds), dtype=np.int64)
    for kind in np.unique(kinds):
        pos = np.flatnonzero(kinds == kind)
        stats = sequencer["payees"].get(kind, {"customer_share": 0.0, "pool_per_row": 0.01})
        pool = unique_ids(rng, max(1, round(stats["pool_per_row"] * len(pos))))
        to_customer = rng.random(len(pos)) < stats["customer_share"]
        dest[pos] = np.where(
            to_customer,
            customer_ids[rng.integers(0, len(customer_ids), len(pos))],
            pool[rng.integers(0, len(pool), len(pos))],
        )
    return dest


def _timestamps(slots: pd.DataFrame, hour: np.ndarray, sequencer: dict, rng) -> np.ndarray:
    """Episode start: a uniform day of the reference span, the hour of the episode's first
    row, a uniform second; each row then keeps its template offset."""
    episode = slots["episode"].to_numpy()
    first = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
    n = len(first)
    start = (
        sequencer["start"]
        + rng.integers(0, sequencer["span_days"], n) * 86400
        + hour[first] * 3600
        + rng.integers(0, 3600, n)
    )
    size = np.diff(np.r_[first, len(episode)])
    return np.repeat(start, size) + slots["offset"].to_numpy()


def _draw_slots(bundle: SynthesizerBundle, n_rows: int, fraud_rate: float, rng) -> pd.DataFrame:
    """Episode slots of both classes: fraud episodes until fraud_rate * n_rows rows, legit
    episodes for the rest; episode ids are global."""
    if not 0.0 <= fraud_rate < 1.0:
        raise ValueError(f"generate.fraud_rate must be in [0, 1), got {fraud_rate}")
    classes = bundle.sequencer["classes"]
    n_fraud = round(fraud_rate * n_rows)
    if n_fraud and "fraud" not in classes:
        raise ValueError("fraud_rate > 0 but the synthesizer learned no fraud episodes")
    parts, offset = [], 0
    for label, n in ((1, n_fraud), (0, n_rows - n_fraud)):
        if n == 0:
            continue
        slots = draw_episodes(classes[CLASSES[label]], n, rng)
        slots["episode"] += offset
        slots["label"] = label
        offset = int(slots["episode"].max()) + 1
        parts.append(slots)
    return pd.concat(parts, ignore_index=True)


def enforce_schema(frame: pd.DataFrame) -> pd.DataFrame:
    """The data contract, made true (clipping) or checked (raising) before anything is
    written: positive finite amounts, non-negative balances, known types, unique ids."""
    frame["amount"] = np.clip(frame["amount"].to_numpy(float), 0.01, None)
    for column in BALANCE_COLUMNS:
        frame[column] = np.maximum(frame[column].to_numpy(float), 0.0)
    numbers = frame[["amount", *BALANCE_COLUMNS]].to_numpy()
    if not np.isfinite(numbers).all():
        raise ValueError("generated a non-finite amount or balance")
    if not frame["type"].isin(TRANSACTION_TYPES).all():
        raise ValueError("generated an unknown transaction type")
    if not frame["transaction_id"].is_unique:
        raise ValueError("generated duplicate transaction ids")
    if (frame["user_id"] <= 0).any() or (frame["dest_id"] <= 0).any():
        raise ValueError("generated a non-positive account id")
    located = [c for c in LOCATION_DATA_COLUMNS if c in frame.columns]
    return frame[[*TRANSACTION_COLUMNS[:-1], *located, TRANSACTION_COLUMNS[-1]]]


def generate(
    bundle: SynthesizerBundle, n_rows: int, fraud_rate: float, seed: int, chunk_rows: int,
    geoip: GeoIpDatabase | None = None,
) -> pd.DataFrame:  # fmt: skip
    """n_rows synthetic transactions, sorted by timestamp. Deterministic for the same seed
    and chunk_rows (each chunk is sampled with its own seed drawn from `seed`). With
    `geoip` and a reference that had locations, each gets one drawn from the fitted shares
    (training.lib.locations) with addresses of real ranges."""
    if n_rows <= 0:
        raise ValueError(f"generate.n_rows must be positive, got {n_rows}")
    rng = np.random.default_rng(seed)
    slots = _draw_slots(bundle, n_rows, fraud_rate, rng)
    values = {c: np.zeros(n_rows) for c in ("hour", "amount", *BALANCE_COLUMNS)}
    values["is_unauthorized_overdraft"] = np.zeros(n_rows)
    with tqdm(total=n_rows, unit="rows", desc="sampling", disable=None) as bar:
        for label in (0, 1):
            pos = np.flatnonzero(slots["label"].to_numpy() == label)
            if len(pos) == 0:
                continue
            filled = fill_slots(slots.iloc[pos], bundle, label, rng, bar, chunk_rows)
            for column, column_values in filled.items():
                values[column][pos] = column_values
    frame = _assemble(slots, values, bundle.sequencer, rng, seed)
    mix = bundle.sequencer.get("location")
    if geoip is None or not mix:
        return frame
    return enforce_schema(add_locations(frame, geoip, rng, LocationMix(**mix)))


def _assemble(slots: pd.DataFrame, values: dict, sequencer: dict, rng, seed: int):
    """Users, payees and timestamps for the filled slots; the canonical frame."""
    sender, payee, n_users = _actor_users(slots, sequencer, rng)
    customer_ids = unique_ids(rng, n_users)
    kinds = slots["type"].to_numpy().astype(object)
    dest_id = _payees(kinds, sequencer, customer_ids, rng)
    dest_id = np.where(payee >= 0, customer_ids[np.maximum(payee, 0)], dest_id)
    hour = values.pop("hour").astype(np.int64)
    frame = pd.DataFrame(
        {
            "user_id": customer_ids[sender],
            "timestamp": _timestamps(slots, hour, sequencer, rng),
            "type": kinds,
            **values,
            "dest_id": dest_id,
            "is_fraud": slots["label"].to_numpy().astype(np.int8),
        }
    )
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    frame.insert(0, "transaction_id", sequential_ids(f"syn{seed}-", len(frame)))
    return enforce_schema(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--synthesizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--geoip-db", type=Path, help="IP country database (make geoip-db)")
    args = parser.parse_args(argv)
    configure_logging()
    quiet_libraries()
    started = time.perf_counter()
    try:
        params = load_params(args.params, "generate")
        frame = generate(
            load_bundle(args.synthesizer),
            n_rows=int(params["n_rows"]),
            fraud_rate=float(params["fraud_rate"]),
            seed=int(params["seed"]),
            chunk_rows=int(params["chunk_rows"]),
            geoip=GeoIpDatabase(args.geoip_db) if args.geoip_db else None,
        )
    except (OSError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out, index=False)
    log.info(
        "wrote %s: %d rows, fraud rate %.4f, in %.1fs",
        args.out,
        len(frame),
        frame["is_fraud"].mean(),
        time.perf_counter() - started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
