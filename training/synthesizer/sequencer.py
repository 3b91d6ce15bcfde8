"""The sequencer: episode templates that give synthetic users realistic histories.

A copula samples independent rows; velocity features need per-user histories. The
reference is cut into episodes (connected rows of one class: the same user acting again
within `episode_gap_seconds`, or a payee acting within that gap after being paid, like a
mule cashing out). Each episode becomes a template: per row its type, seconds since the
episode start, which actor sends (0 = the first), which actor (if any) is the payee, and
the rank of its amount among the episode's rows of that type. Beside the templates it keeps
what generate needs to place episodes and assign users: the reference's time span, legit
episodes per customer, mule reuse and the payee statistics per type."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from training.synthesizer.representation import CLASSES

log = logging.getLogger(__name__)


def find_episodes(frame: pd.DataFrame, gap: int) -> np.ndarray:
    """Episode id per row: rows are linked when the same user acts again within `gap`
    seconds, or when a payee acts within `gap` seconds after being paid (a mule cashing
    out). Episodes are the connected groups."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(frame)
    users, rank = np.unique(frame["user_id"].to_numpy(), return_inverse=True)
    t = frame["timestamp"].to_numpy(np.int64) - int(frame["timestamp"].min())
    key = (rank.astype(np.int64) << 32) | t
    order = np.argsort(key, kind="stable")
    repeat = (rank[order][1:] == rank[order][:-1]) & (np.diff(t[order]) <= gap)
    a, b = [order[1:][repeat]], [order[:-1][repeat]]
    dest = frame["dest_id"].to_numpy()
    pos = np.minimum(np.searchsorted(users, dest), len(users) - 1)
    paid = np.flatnonzero(users[pos] == dest)
    nxt = np.searchsorted(key[order], (pos[paid].astype(np.int64) << 32) | t[paid])
    ok = nxt < n
    paid, nxt = paid[ok], order[nxt[ok]]
    linked = (rank[nxt] == pos[paid]) & (t[nxt] - t[paid] <= gap) & (nxt != paid)
    a.append(paid[linked])
    b.append(nxt[linked])
    a, b = np.concatenate(a), np.concatenate(b)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def episode_templates(frame: pd.DataFrame, episode: np.ndarray, keep: np.ndarray) -> dict:
    """The kept episodes as columnar templates (see the module docstring)."""
    rows = pd.DataFrame(
        {
            "episode": episode,
            "ts": frame["timestamp"].to_numpy(),
            "user": frame["user_id"].to_numpy(),
            "dest": frame["dest_id"].to_numpy(),
            "type": frame["type"].to_numpy().astype(str),
            "amount": frame["amount"].to_numpy(),
        }
    )
    rows = rows[np.isin(episode, keep)].sort_values(["episode", "ts"], kind="stable")
    rows["episode"] = np.unique(rows["episode"].to_numpy(), return_inverse=True)[1]
    rows["pos"] = np.arange(len(rows))
    rows["offset"] = rows["ts"] - rows.groupby("episode")["ts"].transform("min")
    first_seen = rows.groupby(["episode", "user"])["pos"].transform("min")
    rows["actor"] = first_seen.groupby(rows["episode"]).rank(method="dense").astype(int) - 1
    actors = rows[["episode", "user", "actor"]].drop_duplicates()
    payee = rows[["episode", "dest"]].merge(
        actors, left_on=["episode", "dest"], right_on=["episode", "user"], how="left"
    )
    rows["dest_actor"] = payee["actor"].fillna(-1).astype(int).to_numpy()
    rows["rank"] = rows.groupby(["episode", "type"])["amount"].rank(method="first").astype(int) - 1
    columns = ["episode", "type", "offset", "actor", "dest_actor", "rank"]
    return {c: rows[c].tolist() for c in columns}


def _class_templates(frame: pd.DataFrame, params: dict, rng: np.random.Generator):
    """(templates, episode ids) of one class's rows; at most max_templates episodes kept."""
    episode = find_episodes(frame, int(params["episode_gap_seconds"]))
    n_episodes = int(episode.max()) + 1 if len(episode) else 0
    keep = rng.choice(n_episodes, size=min(n_episodes, int(params["max_templates"])), replace=False)
    templates = episode_templates(frame, episode, keep)
    templates["n_episodes"] = n_episodes
    return templates, episode


def _activity(legit: pd.DataFrame, episode: np.ndarray, max_values: int, rng) -> list[int]:
    """Legit episodes per active customer over the reference span (a bootstrap sample)."""
    first_rows = ~pd.Series(episode).duplicated().to_numpy()
    counts = legit.loc[first_rows, "user_id"].value_counts().to_numpy()
    return sorted(rng.choice(counts, size=min(len(counts), max_values), replace=False).tolist())


def _payees(train: pd.DataFrame) -> dict:
    """Per type: the share of payees who are customers, and distinct payees per row."""
    customers = np.unique(train["user_id"].to_numpy())
    out = {}
    for kind, rows in train.groupby("type"):
        dest = rows["dest_id"].to_numpy()
        out[kind] = {
            "customer_share": float(np.isin(dest, customers).mean()),
            "pool_per_row": float(len(np.unique(dest)) / len(dest)),
        }
    return out


def _mule_reuse(fraud: pd.DataFrame, episode: np.ndarray) -> float:
    """Fraud episodes per mule, where a mule is any user acting in a fraud episode after
    its first actor (the victim)."""
    rows = pd.DataFrame({"episode": episode, "user": fraud["user_id"].to_numpy()})
    victim = rows.groupby("episode")["user"].transform("first")
    mules = rows[rows["user"] != victim].drop_duplicates()
    return float(len(mules) / mules["user"].nunique()) if len(mules) else 1.0


def _drop_unmodelled(templates: dict, modelled: set[str]) -> dict:
    """Templates whose every row has a fitted segment, renumbered from 0."""
    rows = pd.DataFrame({k: v for k, v in templates.items() if k != "n_episodes"})
    bad = rows.loc[~rows["type"].isin(modelled), "episode"].unique()
    if len(bad):
        log.warning("dropped %d episode templates with unmodelled types", len(bad))
    rows = rows[~rows["episode"].isin(bad)]
    rows["episode"] = np.unique(rows["episode"].to_numpy(), return_inverse=True)[1]
    return {**{c: rows[c].tolist() for c in rows.columns}, "n_episodes": templates["n_episodes"]}


def fit_sequencer(train: pd.DataFrame, modelled, params: dict, rng) -> dict:
    """Episode templates per class and the statistics generate uses to place them."""
    classes, activity, reuse = {}, [], 1.0
    for label, name in CLASSES.items():
        frame = train[train["is_fraud"] == label].reset_index(drop=True)
        if frame.empty:
            continue
        templates, episode = _class_templates(frame, params, rng)
        templates = _drop_unmodelled(templates, {k for (c, k) in modelled if c == label})
        if templates["episode"]:
            classes[name] = templates
        if label == 0:
            activity = _activity(frame, episode, int(params["max_templates"]), rng)
        else:
            reuse = _mule_reuse(frame, episode)
    ts = train["timestamp"]
    return {
        "start": int(ts.min() // 86400 * 86400),
        "span_days": max(1, round((int(ts.max()) - int(ts.min())) / 86400)),
        "episode_gap_seconds": int(params["episode_gap_seconds"]),
        "classes": classes,
        "episodes_per_customer": activity,
        "mule_reuse": reuse,
        "payees": _payees(train),
    }


def sequencer_summary(sequencer: dict) -> dict:
    summary = {"span_days": sequencer["span_days"], "mule_reuse": round(sequencer["mule_reuse"], 3)}
    for name, templates in sequencer["classes"].items():
        kept = max(templates["episode"]) + 1
        summary[f"{name}_episodes"] = templates["n_episodes"]
        summary[f"{name}_rows_per_episode"] = round(len(templates["episode"]) / kept, 3)
    return summary
