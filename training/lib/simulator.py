"""A seeded PaySim-style simulator: the default reference dataset when no real export exists.

Why a simulator: the pipeline needs a reference with known fraud patterns to fit the
synthesizer, to hold out an honest test set and to check generated batches against.

Population: customers (with a wealth level, an activity rate and a personal type mix),
cash agents (tracked balances) and merchants (untracked, as in PaySim: 0/0 balances), and a
small set of customers recruited as mules. Time runs in hourly steps from a start epoch;
a transaction's timestamp is start + step*3600 + its seconds within the hour (follow-up
cash-outs may spill a few minutes into the next hour).

Each step is simulated in three vectorised phases over the customers' balance vector:
  A. single transactions (at most one per customer): everyday PAYMENT/CASH_IN/CASH_OUT/...,
     legit drains (a customer moves the whole balance to another customer) and the first leg
     of an account takeover (fraud pattern 1: a TRANSFER that empties the victim's balance
     into a mule);
  B. bursts (several rows of one customer within minutes): legit shopping sprees and card
     testing (fraud pattern 2: several tiny PAYMENT/DEBIT probes, then a larger one);
  C. follow-ups: the mule's CASH_OUT of the stolen amount minutes after the takeover, and
     some legit drain recipients cashing out too.
  D. (off unless `cash_drain_rate` > 0, from step `cash_drain_from_step`) fraud pattern 3,
     one the reference never holds: a taken-over account emptied by its own CASH_OUTs,
     two to four within the hour, no transfer to a mule. The loop benchmark turns it on
     mid-stream to see whether labels teach the next model a pattern it never saw.
Legit drains, large cash-outs and legit bursts are there on purpose: without the balance
columns, fraud is not trivially separable. Balances within one row are exact (an outflow
leaves max(old - amount, 0)); across rows they are exact per phase, approximate only when
one account is both a sender and a receiver within the same hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudops.schema import TRANSACTION_COLUMNS, TRANSACTION_TYPES

CASH_IN, CASH_OUT, DEBIT, PAYMENT, TRANSFER = range(len(TRANSACTION_TYPES))
OUTFLOW_TYPES = (CASH_OUT, DEBIT, PAYMENT, TRANSFER)
LEGIT_TYPE_MIX = np.array([0.22, 0.35, 0.01, 0.34, 0.08])  # PaySim's overall mix
TYPE_AMOUNT_MEDIAN = np.array([0.0, 150.0, 60.0, 35.0, 600.0])  # CASH_IN set per customer
AMOUNT_SIGMA = 1.1
# Relative activity per hour of day (legit people sleep; account takeovers favour the night).
LEGIT_HOURS = np.array(
    [3, 2, 1, 1, 1, 2, 4, 7, 9, 10, 10, 11, 12, 11, 10, 10, 10, 11, 12, 12, 11, 9, 7, 5],
    dtype=float,
)
ATO_HOURS = np.array(
    [9, 10, 10, 10, 9, 8, 6, 5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 6, 6, 7, 8, 9], dtype=float
)
MULES_PER_CUSTOMER = 0.005
AGENTS_PER_CUSTOMER = 0.01
MERCHANTS_PER_CUSTOMER = 0.1
# A cash agent's float is restocked to its opening level once a simulated day (agents
# rebalance with their bank): customers cash in more than they cash out, so without it the
# agents drain and the held-out days' destination balances drift from the training days'.
AGENT_RESTOCK_STEPS = 24
LEGIT_DRAIN_P = 0.05  # of legit transfers, the share that moves the whole balance
DRAIN_CASHOUT_P = 0.3  # of legit drains, the share whose recipient cashes out soon after
BURST_P = 0.03  # of active customers in an hour, the share on a shopping spree
ATO_MIN_BALANCE = 200.0  # takeovers target funded accounts


@dataclass(frozen=True)
class SimConfig:
    """Sizes and rates of a simulation (the `reference` section of params.yaml)."""

    n_users: int
    n_steps: int
    start: int  # Unix seconds of step 0
    tx_per_user_day: float
    ato_rate: float  # account takeovers per customer per day
    card_testing_rate: float  # card-testing episodes per customer per day
    seed: int
    cash_drain_rate: float = 0.0  # cash-out drains per customer per day (pattern 3)
    cash_drain_from_step: int = 0  # the hour pattern 3 starts


@dataclass
class World:
    """Accounts and their state. Tracked accounts: customers first, then cash agents."""

    account_ids: np.ndarray  # int64 ids of tracked accounts
    merchant_ids: np.ndarray
    balance: np.ndarray  # float64, per tracked account
    n_users: int
    n_agents: int
    rate: np.ndarray  # expected transactions per customer per day
    type_cdf: np.ndarray  # (n_users, 5) cumulative personal type mix
    scale: np.ndarray  # (n_users, 5) personal median amount per type
    mules: np.ndarray  # customer indices recruited as mules


def unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Distinct 10-digit ids, so that no id range gives away an account's role."""
    ids = rng.choice(9_000_000_000, size=n, replace=False) + 1_000_000_000
    return ids.astype(np.int64)


def make_world(cfg: SimConfig, rng: np.random.Generator) -> World:
    """Customers with wealth, habits and balances; agents; merchants; mules."""
    n, n_agents = cfg.n_users, max(2, int(cfg.n_users * AGENTS_PER_CUSTOMER))
    n_merchants = max(2, int(cfg.n_users * MERCHANTS_PER_CUSTOMER))
    ids = unique_ids(rng, n + n_agents + n_merchants)
    wealth = rng.lognormal(0.0, 0.7, n)
    mix = rng.dirichlet(30.0 * LEGIT_TYPE_MIX, size=n)
    mix[:, CASH_IN] = np.maximum(mix[:, CASH_IN], 0.08)
    mix /= mix.sum(axis=1, keepdims=True)
    scale = wealth[:, None] * TYPE_AMOUNT_MEDIAN[None, :]
    # Income matches spending on average, so balances wander instead of draining away or
    # growing: what leaves the customers (cash-out, debit, payment), not transfers, which stay
    # among them.
    spent = slice(CASH_OUT, TRANSFER)
    scale[:, CASH_IN] = (mix[:, spent] * scale[:, spent]).sum(axis=1) / mix[:, CASH_IN]
    balance = np.concatenate(
        [wealth * 2500.0 * rng.lognormal(0.0, 0.8, n), rng.lognormal(13.0, 0.5, n_agents)]
    )
    rate = cfg.tx_per_user_day * rng.lognormal(0.0, 0.8, n) / np.exp(0.32)
    n_mules = max(1, int(n * MULES_PER_CUSTOMER))
    return World(
        account_ids=ids[: n + n_agents],
        merchant_ids=ids[n + n_agents :],
        balance=np.round(balance, 2),
        n_users=n,
        n_agents=n_agents,
        rate=rate,
        type_cdf=np.cumsum(mix, axis=1),
        scale=scale,
        mules=rng.choice(n, size=n_mules, replace=False),
    )


def _exclusive_group_cumsum(values: np.ndarray, group_start: np.ndarray) -> np.ndarray:
    """Sum of the earlier values in each contiguous group (0 for a group's first row)."""
    total = np.cumsum(values)
    starts = np.flatnonzero(group_start)
    base = np.repeat(total[starts] - values[starts], np.diff(np.append(starts, len(values))))
    return total - values - base


def _group_last(first: np.ndarray) -> np.ndarray:
    """Marks the last row of each contiguous group, given the marks of the first rows."""
    last = np.zeros(len(first), dtype=bool)
    last[np.flatnonzero(first)[1:] - 1] = True
    last[-1:] = True
    return last


def _settle_singles(w: World, b: dict[str, np.ndarray]) -> None:
    """Balances before/after for rows with distinct senders; updates the world's state."""
    orig, amount, inflow = b["orig"], b["amount"], b["type"] == CASH_IN
    old_o = w.balance[orig]
    new_o = np.where(inflow, old_o + amount, np.maximum(old_o - amount, 0.0))
    np.add.at(w.balance, orig, new_o - old_o)
    old_d, new_d = np.zeros(len(orig)), np.zeros(len(orig))
    tracked = np.flatnonzero(b["dest_idx"] >= 0)
    # Several rows may pay one agent or customer within the hour: credit them in time order.
    order = tracked[np.lexsort((b["ts"][tracked], b["dest_idx"][tracked]))]
    dest = b["dest_idx"][order]
    delta = np.where(inflow[order], -amount[order], amount[order])
    start = np.ones(len(order), dtype=bool)
    start[1:] = dest[1:] != dest[:-1]
    old_d[order] = np.maximum(w.balance[dest] + _exclusive_group_cumsum(delta, start), 0.0)
    new_d[order] = np.maximum(old_d[order] + delta, 0.0)
    np.add.at(w.balance, dest, new_d[order] - old_d[order])
    np.maximum(np.round(w.balance, 2), 0.0, out=w.balance)
    b.update(old_o=old_o, new_o=new_o, old_d=old_d, new_d=new_d)


def _settle_bursts(w: World, b: dict[str, np.ndarray], first: np.ndarray) -> None:
    """Balances for bursts (rows of one sender in time order, merchants as payees)."""
    spent_before = _exclusive_group_cumsum(b["amount"], first)
    start_balance = w.balance[b["orig"]]
    b["old_o"] = np.maximum(start_balance - spent_before, 0.0)
    b["new_o"] = np.maximum(start_balance - spent_before - b["amount"], 0.0)
    b["old_d"] = b["new_d"] = np.zeros(len(first))
    last = _group_last(first)
    w.balance[b["orig"][last]] = np.round(b["new_o"][last], 2)


def _block(orig, dest_idx, dest_id, ts, types, amount, fraud) -> dict[str, np.ndarray]:
    return {
        "orig": np.asarray(orig, dtype=np.int64),
        "dest_idx": np.asarray(dest_idx, dtype=np.int64),
        "dest_id": np.asarray(dest_id, dtype=np.int64),
        "ts": np.asarray(ts, dtype=np.int64),
        "type": np.asarray(types, dtype=np.int8),
        "amount": np.round(np.maximum(np.asarray(amount, dtype=np.float64), 0.01), 2),
        "fraud": np.broadcast_to(np.int8(fraud), (len(orig),)).copy(),
    }


def _destinations(w: World, rng: np.random.Generator, types: np.ndarray, orig: np.ndarray):
    """Payee per row: a cash agent for CASH_IN/OUT, another customer for TRANSFER, else a
    merchant (untracked: index -1)."""
    k = len(types)
    agent = w.n_users + rng.integers(0, w.n_agents, k)
    other = (orig + rng.integers(1, w.n_users, k)) % w.n_users  # never the sender itself
    dest_idx = np.where((types == CASH_IN) | (types == CASH_OUT), agent, -1)
    dest_idx = np.where(types == TRANSFER, other, dest_idx)
    merchant = w.merchant_ids[rng.integers(0, len(w.merchant_ids), k)]
    dest_id = np.where(dest_idx >= 0, w.account_ids[np.maximum(dest_idx, 0)], merchant)
    return dest_idx, dest_id


def _legit_singles(w: World, rng: np.random.Generator, users: np.ndarray, step_ts: int):
    """Everyday transactions of customers active this hour, one each."""
    k = len(users)
    types = np.minimum((rng.random(k)[:, None] > w.type_cdf[users]).sum(axis=1), TRANSFER)
    amount = w.scale[users, types] * rng.lognormal(0.0, AMOUNT_SIGMA, k)
    balance = w.balance[users]
    outflow = types != CASH_IN
    drain = (types == TRANSFER) & (rng.random(k) < LEGIT_DRAIN_P) & (balance >= 1.0)
    # Most people do not spend money they do not have; a few overdraw.
    capped = outflow & (amount > balance) & (balance >= 1.0) & (rng.random(k) < 0.85)
    amount = np.where(capped, balance * rng.uniform(0.2, 0.95, k), amount)
    amount = np.where(drain, balance, amount)
    dest_idx, dest_id = _destinations(w, rng, types, users)
    b = _block(users, dest_idx, dest_id, step_ts + rng.integers(0, 3600, k), types, amount, 0)
    b["follow"] = drain & (rng.random(k) < DRAIN_CASHOUT_P)
    return b


def _takeovers(w: World, rng: np.random.Generator, victims: np.ndarray, step_ts: int):
    """Fraud pattern 1, first leg: each victim's whole balance goes to a mule."""
    k = len(victims)
    mules = rng.choice(w.mules, k)
    amount = w.balance[victims]
    ts = step_ts + rng.integers(0, 3600, k)
    b = _block(victims, mules, w.account_ids[mules], ts, np.full(k, TRANSFER), amount, 1)
    b["follow"] = np.ones(k, dtype=bool)
    return b


def _follow_ups(w: World, rng: np.random.Generator, singles: dict[str, np.ndarray]):
    """Recipients cashing out minutes after a drain: always for a mule (fraud pattern 1,
    second leg, the stolen amount), sometimes for a legit recipient (part of it)."""
    sel = np.flatnonzero(singles["follow"])
    fraud = singles["fraud"][sel]
    k = len(sel)
    received = singles["amount"][sel]
    amount = np.where(fraud == 1, received, received * rng.uniform(0.4, 1.0, k))
    gap = np.where(fraud == 1, rng.integers(120, 1800, k), rng.integers(600, 5400, k))
    orig = singles["dest_idx"][sel]
    types = np.full(k, CASH_OUT)
    dest_idx, dest_id = _destinations(w, rng, types, orig)
    b = _block(orig, dest_idx, dest_id, singles["ts"][sel] + gap, types, amount, 0)
    b["fraud"] = fraud.copy()
    _settle_singles(w, b)
    return b


def _burst_block(w, rng, users, sizes, amount, gap, types, step_ts, fraud):
    """Rows of several customers' bursts, each burst contiguous and inside the hour."""
    owner = np.repeat(users, sizes)
    first = np.zeros(len(owner), dtype=bool)
    first[np.cumsum(sizes) - sizes] = True
    gap = np.where(first, 0, gap)
    offset = _exclusive_group_cumsum(gap, first) + gap
    span = offset[_group_last(first)]
    s0 = np.repeat(rng.integers(0, 3600 - span), sizes)
    merchant = w.merchant_ids[rng.integers(0, len(w.merchant_ids), len(owner))]
    b = _block(
        owner, np.full(len(owner), -1), merchant, step_ts + s0 + offset, types, amount, fraud
    )
    return b, first


def _legit_bursts(w: World, rng: np.random.Generator, users: np.ndarray, step_ts: int):
    """Shopping sprees: 2-5 payments within minutes (the legit look-alike of card testing)."""
    sizes = np.clip(2 + rng.poisson(1.0, len(users)), 2, 5)
    n = int(sizes.sum())
    owner = np.repeat(users, sizes)
    amount = w.scale[owner, PAYMENT] * rng.lognormal(0.0, AMOUNT_SIGMA, n)
    gap = np.minimum(rng.lognormal(np.log(120.0), 0.8, n), 600).astype(np.int64)
    types = np.where(rng.random(n) < 0.9, PAYMENT, DEBIT)
    return _burst_block(w, rng, users, sizes, amount, gap, types, step_ts, 0)


def _card_testing(w: World, rng: np.random.Generator, victims: np.ndarray, step_ts: int):
    """Fraud pattern 2: several tiny probes of a stolen card within minutes, then a larger
    purchase; all on one type (PAYMENT or DEBIT) per episode."""
    sizes = np.minimum(3 + rng.poisson(2.0, len(victims)), 9) + 1
    n = int(sizes.sum())
    last = np.zeros(n, dtype=bool)
    last[np.cumsum(sizes) - 1] = True
    amount = np.where(last, rng.uniform(150.0, 1500.0, n), rng.uniform(0.5, 5.0, n))
    gap = np.minimum(rng.lognormal(np.log(20.0), 0.6, n), 120).astype(np.int64)
    types = np.repeat(np.where(rng.random(len(victims)) < 0.7, PAYMENT, DEBIT), sizes)
    return _burst_block(w, rng, victims, sizes, amount, gap, types, step_ts, 1)


def _cash_drains(w: World, rng: np.random.Generator, victims: np.ndarray, step_ts: int):
    """Fraud pattern 3: the victim's balance taken out in 2-4 CASH_OUTs minutes apart (settled
    as a burst: the cash agents' balances are not credited)."""
    sizes = rng.integers(2, 5, len(victims))
    n = int(sizes.sum())
    owner = np.repeat(victims, sizes)
    share = rng.dirichlet(np.ones(4), len(victims))
    share = np.concatenate([sh[:k] / sh[:k].sum() for sh, k in zip(share, sizes, strict=True)])
    amount = np.round(np.repeat(w.balance[victims], sizes) * share, 2)
    first = np.zeros(n, dtype=bool)
    first[np.cumsum(sizes) - sizes] = True
    gap = rng.integers(60, 600, n)
    offset = np.where(first, 0, gap)
    offset = _exclusive_group_cumsum(offset, first) + offset
    s0 = np.repeat(rng.integers(0, 3600 - 1800, len(victims)), sizes)
    types = np.full(n, CASH_OUT)
    dest_idx, dest_id = _destinations(w, rng, types, owner)
    b = _block(owner, dest_idx, dest_id, step_ts + s0 + offset, types, amount, 1)
    return b, first


def _pick_victims(rng: np.random.Generator, lam: float, eligible: np.ndarray) -> np.ndarray:
    """A Poisson number of distinct customers among the eligible ones."""
    k = rng.poisson(lam)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.flatnonzero(eligible)
    return rng.choice(candidates, size=min(k, len(candidates)), replace=False)


def _concat(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}


def _simulate_step(w: World, cfg: SimConfig, rng: np.random.Generator, step: int, is_mule):
    """One hour: fraud victims first (they do nothing else this hour), then everyone else."""
    hour = (cfg.start // 3600 + step) % 24
    step_ts = cfg.start + step * 3600
    per_hour = w.n_users / 24.0
    free = ~is_mule.copy()
    ato_lam = cfg.ato_rate * per_hour * ATO_HOURS[hour] / ATO_HOURS.mean()
    ato = _pick_victims(rng, ato_lam, free & (w.balance[: w.n_users] >= ATO_MIN_BALANCE))
    free[ato] = False
    carded = _pick_victims(rng, cfg.card_testing_rate * per_hour, free)
    free[carded] = False
    drained = np.zeros(0, dtype=np.int64)
    if cfg.cash_drain_rate > 0 and step >= cfg.cash_drain_from_step:
        lam = cfg.cash_drain_rate * per_hour * ATO_HOURS[hour] / ATO_HOURS.mean()
        drained = _pick_victims(rng, lam, free & (w.balance[: w.n_users] >= ATO_MIN_BALANCE))
        free[drained] = False
    activity = w.rate * LEGIT_HOURS[hour] / LEGIT_HOURS.mean() / 24.0
    active = np.flatnonzero((rng.random(w.n_users) < activity) & (free | is_mule))
    spree = rng.random(len(active)) < BURST_P
    singles = _concat(
        [_legit_singles(w, rng, active[~spree], step_ts), _takeovers(w, rng, ato, step_ts)]
    )
    _settle_singles(w, singles)
    (legit_b, legit_first), (card_b, card_first) = (
        _legit_bursts(w, rng, active[spree], step_ts),
        _card_testing(w, rng, carded, step_ts),
    )
    parts, firsts = [legit_b, card_b], [legit_first, card_first]
    if len(drained):
        drain_b, drain_first = _cash_drains(w, rng, drained, step_ts)
        parts.append(drain_b)
        firsts.append(drain_first)
    bursts = _concat(parts)
    _settle_bursts(w, bursts, np.concatenate(firsts))
    follow = _follow_ups(w, rng, singles)
    del singles["follow"]
    return [singles, bursts, follow]


def sequential_ids(prefix: str, n: int) -> np.ndarray:
    """Unique transaction ids in row order (built in Arrow: a Python loop costs seconds)."""
    digits = pc.utf8_lpad(pa.array(np.arange(n, dtype=np.int64)).cast(pa.string()), 9, "0")
    return pc.binary_join_element_wise(prefix, digits, "").to_numpy(zero_copy_only=False)


def _to_frame(w: World, blocks: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """The canonical columns, sorted by timestamp (ties keep simulation order)."""
    b = _concat(blocks)
    order = np.argsort(b["ts"], kind="stable")
    b = {key: value[order] for key, value in b.items()}
    outflow = b["type"] != CASH_IN
    frame = pd.DataFrame(
        {
            "transaction_id": sequential_ids("ref-", len(order)),
            "user_id": w.account_ids[b["orig"]],
            "timestamp": b["ts"],
            "type": np.asarray(TRANSACTION_TYPES, dtype=object)[b["type"]],
            "amount": b["amount"],
            "old_balance_orig": np.round(b["old_o"], 2),
            "new_balance_orig": np.round(b["new_o"], 2),
            "old_balance_dest": np.round(b["old_d"], 2),
            "new_balance_dest": np.round(b["new_d"], 2),
            "is_unauthorized_overdraft": (outflow & (b["amount"] > b["old_o"])).astype(float),
            "dest_id": b["dest_id"],
            "is_fraud": b["fraud"].astype(np.int8),
        }
    )
    return frame[list(TRANSACTION_COLUMNS)]


def simulate(cfg: SimConfig) -> pd.DataFrame:
    """Simulate cfg.n_steps hours of transactions; deterministic for a given config."""
    rng = np.random.default_rng(cfg.seed)
    w = make_world(cfg, rng)
    is_mule = np.zeros(w.n_users, dtype=bool)
    is_mule[w.mules] = True
    blocks: list[dict[str, np.ndarray]] = []
    agent_float = w.balance[w.n_users :].copy()
    for step in range(cfg.n_steps):
        if step and step % AGENT_RESTOCK_STEPS == 0:
            w.balance[w.n_users :] = agent_float
        blocks += _simulate_step(w, cfg, rng, step, is_mule)
    return _to_frame(w, blocks)
