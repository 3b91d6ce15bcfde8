"""Stage `fit_synthesizer`: learn from the reference how to make synthetic transactions.

Two parts, both saved in the output directory (DVC-tracked):

1. Row model: SDV GaussianCopulaSynthesizers, one per (class, type) segment, so the fraud
   patterns are not blurred into the legit majority by a single copula (and each type keeps
   its own amount distribution). Rows are modelled in a representation that keeps the
   relations the features depend on:
   - amounts and balances on a log scale (log1p), which tames their heavy tails; marginals
     are `truncnorm` for legit segments (fast to sample at millions of rows) and
     `gaussian_kde` for fraud ones (multi-modal: card-testing probes vs the purchase;
     few rows, so the KDE's numerical inversion stays cheap);
   - the origin's new balance as a mode (credit / outflow / drain / other) and the
     destination's as (untracked / credit / debit / other), plus flags for an empty account,
     so that drains (new balance exactly 0, amount == balance) and exact balance arithmetic
     survive sampling instead of becoming noisy floats; `other` rows (inconsistent balances,
     frequent in real PaySim) carry their sampled new balance;
   - the hour of day, since fraud keeps different hours.
   Segments with fewer than `min_segment_rows` rows are dropped (with a warning) along with
   the episode templates that need them.

2. Sequencer: a copula samples independent rows; velocity features need per-user histories.
   The reference is cut into episodes (connected rows of one class: the same user acting
   again within `episode_gap_seconds`, or a payee acting within that gap after being paid,
   like a mule cashing out). Each episode becomes a template: per row its type, seconds
   since the episode start, which actor sends (0 = the first), which actor (if any) is the
   payee, and the rank of its amount among the episode's rows of that type. Generate draws
   templates at random (the empirical episode distribution of each class), fills each slot
   with a copula row of the slot's class and type (amounts ordered by the template's
   ranks), places episodes in time (day uniform over the reference span, hour from the
   copula row, seconds uniform) and assigns users: legit episodes to customers whose
   activity is bootstrapped from the reference's episodes per user, fraud victims among
   the same customers, later fraud actors (mules) from a pool sized by the reference's mule
   reuse. So card-testing bursts, takeover-then-cash-out pairs and legit sprees keep their
   timing, and the time since a user's previous transaction follows the reference.
   What it does not keep: balances across one user's rows are not chained (each row's
   balances are consistent within the row only).

The report JSON (a DVC metric) holds SDV's quality report per class (overall score, Column
Shapes, Column Pair Trends, per-column shapes) computed on the canonical columns, the
segments fitted and the sequencer's statistics."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging

log = logging.getLogger("training.fit_synthesizer")

TABLE = "transactions"
CLASSES = {0: "legit", 1: "fraud"}
NUMERIC = ("hour", "log_amount", "log_old_orig", "log_new_orig", "log_old_dest", "log_new_dest")
CATEGORICAL = ("orig_mode", "dest_mode", "orig_zero", "dest_zero")
TOLERANCE = 0.011  # balances are in cents; float sums may be off by a hair
MANIFEST = "manifest.json"
SEQUENCER = "sequencer.json"
FORMAT_VERSION = 1


NOISY_LOGGERS = ("sdv", "rdt", "copulas", "sdmetrics", "SingleTableSynthesizer")


def quiet_libraries() -> None:
    """SDV and friends log every fit and sample at INFO; keep the stage's own log readable."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Segment:
    """One fitted copula: the rows of one class and one transaction type."""

    label: int
    type: str
    rows: int
    distribution: str
    constants: dict  # columns constant in the segment: not modelled, restored on sampling
    synthesizer: object | None  # GaussianCopulaSynthesizer; None when every column is constant

    @property
    def name(self) -> str:
        return f"{CLASSES[self.label]}_{self.type}"


@dataclass
class SynthesizerBundle:
    """Everything generate needs: the segments' copulas and the sequencer."""

    segments: dict[tuple[int, str], Segment]
    sequencer: dict


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) <= TOLERANCE


def _impute_log(values: np.ndarray, missing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """log1p of values, with the `missing` rows (empty accounts, flagged separately) drawn
    from the other rows so that a spike at zero does not distort the fitted marginal."""
    out = np.log1p(values)
    present = out[~missing]
    if missing.any() and len(present):
        out[missing] = rng.choice(present, size=int(missing.sum()))
    return out


def _orig_mode(kind: np.ndarray, amount, old, new) -> np.ndarray:
    inflow = kind == "CASH_IN"
    credit = inflow & _close(new, old + amount)
    drain = ~inflow & (old > 0) & _close(amount, old) & (new <= TOLERANCE)
    outflow = ~inflow & ~drain & _close(new, np.maximum(old - amount, 0.0))
    return np.select([credit, drain, outflow], ["credit", "drain", "outflow"], "other")


def _dest_mode(kind: np.ndarray, amount, old, new) -> np.ndarray:
    untracked = (old <= TOLERANCE) & (new <= TOLERANCE)
    credit = ~untracked & _close(new, old + amount)
    debit = ~untracked & ~credit & _close(new, np.maximum(old - amount, 0.0))
    return np.select([untracked, credit, debit], ["untracked", "credit", "debit"], "other")


def encode_rows(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Canonical transactions -> the copula's columns (see the module docstring)."""
    kind = frame["type"].to_numpy().astype(str)
    amount = frame["amount"].to_numpy(float)
    old_o, new_o = (
        frame["old_balance_orig"].to_numpy(float),
        frame["new_balance_orig"].to_numpy(float),
    )
    old_d, new_d = (
        frame["old_balance_dest"].to_numpy(float),
        frame["new_balance_dest"].to_numpy(float),
    )
    orig_mode, dest_mode = (
        _orig_mode(kind, amount, old_o, new_o),
        _dest_mode(kind, amount, old_d, new_d),
    )
    orig_zero = old_o <= 0
    dest_zero = (old_d <= 0) & (dest_mode != "untracked")
    return pd.DataFrame(
        {
            "hour": (frame["timestamp"].to_numpy() // 3600) % 24,
            "log_amount": np.log1p(amount),
            "log_old_orig": _impute_log(old_o, orig_zero, rng),
            "log_new_orig": _impute_log(new_o, orig_mode != "other", rng),
            "log_old_dest": _impute_log(old_d, dest_zero | (dest_mode == "untracked"), rng),
            "log_new_dest": _impute_log(new_d, dest_mode != "other", rng),
            "orig_mode": orig_mode,
            "dest_mode": dest_mode,
            "orig_zero": np.where(orig_zero, "yes", "no"),
            "dest_zero": np.where(dest_zero, "yes", "no"),
        }
    )


def _money(log_values: np.ndarray) -> np.ndarray:
    return np.round(np.maximum(np.expm1(log_values.astype(float)), 0.0), 2)


def decode_rows(rep: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
    """The copula's columns -> canonical values of transactions of one type."""
    amount = np.maximum(_money(rep["log_amount"].to_numpy()), 0.01)
    old_o = np.where(rep["orig_zero"] == "yes", 0.0, _money(rep["log_old_orig"].to_numpy()))
    mode = rep["orig_mode"].to_numpy()
    drain = (mode == "drain") & (old_o >= 0.01)
    amount = np.where(drain, old_o, amount)
    new_o = np.select(
        [mode == "credit", drain, mode == "other"],
        [old_o + amount, 0.0, _money(rep["log_new_orig"].to_numpy())],
        np.maximum(old_o - amount, 0.0),
    )
    dmode = rep["dest_mode"].to_numpy()
    untracked = dmode == "untracked"
    old_d = np.where(
        untracked | (rep["dest_zero"] == "yes"), 0.0, _money(rep["log_old_dest"].to_numpy())
    )
    new_d = np.select(
        [untracked, dmode == "credit", dmode == "other"],
        [0.0, old_d + amount, _money(rep["log_new_dest"].to_numpy())],
        np.maximum(old_d - amount, 0.0),
    )
    return {
        "hour": np.clip(np.round(rep["hour"].to_numpy(float)), 0, 23).astype(np.int64),
        "amount": amount,
        "old_balance_orig": old_o,
        "new_balance_orig": np.round(new_o, 2),
        "old_balance_dest": old_d,
        "new_balance_dest": np.round(new_d, 2),
        "is_unauthorized_overdraft": ((kind != "CASH_IN") & (amount > old_o)).astype(float),
    }


def _metadata(columns, numeric: tuple[str, ...] = NUMERIC):
    """SDV metadata for one table: the given numeric columns, every other one categorical."""
    from sdv.metadata import Metadata  # sdv imports torch: ~15 s, so only when needed

    spec = {c: {"sdtype": "numerical" if c in numeric else "categorical"} for c in columns}
    return Metadata.load_from_dict({"tables": {TABLE: {"columns": spec}}})


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def fit_segment(rep: pd.DataFrame, label: int, kind: str, distribution: str) -> Segment:
    """A Gaussian copula over one segment's rows (constant columns are stored, not fitted:
    a marginal cannot be fitted to a single value)."""
    from sdv.single_table import GaussianCopulaSynthesizer

    constants = {c: _plain(rep[c].iloc[0]) for c in rep.columns if rep[c].nunique() <= 1}
    data = rep.drop(columns=list(constants))
    synthesizer = None
    if len(data.columns):
        synthesizer = GaussianCopulaSynthesizer(
            _metadata(data.columns), enforce_min_max_values=True, default_distribution=distribution
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SDV warns about its own defaults on every fit
            synthesizer.fit({TABLE: data})
    return Segment(label, kind, len(rep), distribution, constants, synthesizer)


def sample_segment(segment: Segment, n: int, seed: int) -> pd.DataFrame:
    """n rows of a segment in the copula's representation; deterministic for a seed."""
    if segment.synthesizer is None or n == 0:
        frame = pd.DataFrame(index=pd.RangeIndex(n))
    else:
        segment.synthesizer.reset_sampling()
        # SDV offers no public sampling seed; this is what its own reset uses.
        segment.synthesizer._set_random_state(seed)
        frame = segment.synthesizer.sample(n)[TABLE].reset_index(drop=True)
    for column, value in segment.constants.items():
        frame[column] = value
    return frame


def fit_segments(train: pd.DataFrame, params: dict, rng: np.random.Generator) -> dict:
    """One copula per (class, type) with enough rows, each on at most max_rows rows."""
    segments: dict[tuple[int, str], Segment] = {}
    for (label, kind), rows in train.groupby(["is_fraud", "type"], sort=True):
        if len(rows) < int(params["min_segment_rows"]):
            log.warning("%s %s: only %d rows, not modelled", CLASSES[label], kind, len(rows))
            continue
        if len(rows) > int(params["max_rows"]):
            rows = rows.iloc[np.sort(rng.choice(len(rows), int(params["max_rows"]), replace=False))]
        distribution = params[f"{CLASSES[label]}_distribution"]
        started = time.perf_counter()
        segments[(int(label), kind)] = fit_segment(
            encode_rows(rows, rng), int(label), kind, distribution
        )
        log.info(
            "fitted %s %s on %d rows (%s) in %.1fs",
            CLASSES[label],
            kind,
            len(rows),
            distribution,
            time.perf_counter() - started,
        )
    return segments


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


QUALITY_NUMERIC = (
    "hour",
    "amount",
    "old_balance_orig",
    "new_balance_orig",
    "old_balance_dest",
    "new_balance_dest",
)


def canonical_sample(segments: dict, label: int, type_counts: dict[str, int], seed: int):
    """Synthetic rows of one class in canonical columns (+ hour), per-type counts given."""
    parts = []
    for i, (kind, n) in enumerate(sorted(type_counts.items())):
        if (label, kind) in segments and n > 0:
            values = decode_rows(sample_segment(segments[(label, kind)], n, seed + i), kind)
            parts.append(pd.DataFrame({"type": kind, **values}))
    return pd.concat(parts, ignore_index=True)


def _quality_view(rows: pd.DataFrame) -> pd.DataFrame:
    view = rows[["type", *QUALITY_NUMERIC[1:], "is_unauthorized_overdraft"]].copy()
    view.insert(1, "hour", (rows["timestamp"].to_numpy() // 3600) % 24)
    return view.reset_index(drop=True)


def quality_report(train: pd.DataFrame, segments: dict, rows: int, seed: int) -> dict:
    """SDV's quality report per class: reference rows vs as many synthetic rows."""
    from sdv.evaluation import evaluate_quality

    out = {}
    for label, name in CLASSES.items():
        kinds = [k for (c, k) in segments if c == label]
        real = train[(train["is_fraud"] == label) & train["type"].isin(kinds)]
        if real.empty:
            continue
        real = _quality_view(real.sample(min(len(real), rows), random_state=seed))
        synthetic = canonical_sample(segments, label, real["type"].value_counts().to_dict(), seed)
        synthetic = synthetic[real.columns]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = evaluate_quality(
                real, synthetic, _metadata(real.columns, QUALITY_NUMERIC), verbose=False
            )
        properties = report.get_properties().set_index("Property")["Score"]
        shapes = report.get_details("Column Shapes").set_index("Column")["Score"]
        out[name] = {
            "overall": round(float(report.get_score()), 4),
            "column_shapes": round(float(properties["Column Shapes"]), 4),
            "column_pair_trends": round(float(properties["Column Pair Trends"]), 4),
            "columns": {c: round(float(s), 4) for c, s in shapes.items()},
            "rows_compared": len(real),
        }
    return out


def save_bundle(bundle: SynthesizerBundle, out_dir: Path) -> None:
    """Pickles (SDV's own save) for the copulas, JSON for the manifest and the sequencer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.pkl"):
        stale.unlink()
    entries = []
    for segment in bundle.segments.values():
        entry = {
            "label": segment.label,
            "type": segment.type,
            "rows": segment.rows,
            "distribution": segment.distribution,
            "constants": segment.constants,
            "file": None,
        }
        if segment.synthesizer is not None:
            entry["file"] = f"{segment.name}.pkl"
            segment.synthesizer.save(str(out_dir / entry["file"]))
        entries.append(entry)
    manifest = {"format_version": FORMAT_VERSION, "segments": entries}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    (out_dir / SEQUENCER).write_text(json.dumps(bundle.sequencer))


def load_bundle(directory: Path) -> SynthesizerBundle:
    """The bundle save_bundle wrote; a clear error when the directory is not one."""
    from sdv.utils import load_synthesizer

    if not (directory / MANIFEST).is_file() or not (directory / SEQUENCER).is_file():
        raise FileNotFoundError(f"{directory}: not a fitted synthesizer (run fit_synthesizer)")
    manifest = json.loads((directory / MANIFEST).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{directory}: synthesizer format {manifest.get('format_version')}, "
            f"expected {FORMAT_VERSION}; refit it"
        )
    segments = {}
    for e in manifest["segments"]:
        model = load_synthesizer(str(directory / e["file"])) if e["file"] else None
        segments[(e["label"], e["type"])] = Segment(
            e["label"], e["type"], e["rows"], e["distribution"], e["constants"], model
        )
    return SynthesizerBundle(segments, json.loads((directory / SEQUENCER).read_text()))


def _sequencer_summary(sequencer: dict) -> dict:
    summary = {"span_days": sequencer["span_days"], "mule_reuse": round(sequencer["mule_reuse"], 3)}
    for name, templates in sequencer["classes"].items():
        kept = max(templates["episode"]) + 1
        summary[f"{name}_episodes"] = templates["n_episodes"]
        summary[f"{name}_rows_per_episode"] = round(len(templates["episode"]) / kept, 3)
    return summary


def fit_synthesizer(train: pd.DataFrame, params: dict) -> tuple[SynthesizerBundle, dict]:
    """Fit the segments' copulas and the sequencer; report SDV's quality scores."""
    if train.empty:
        raise ValueError("the reference is empty")
    rng = np.random.default_rng(int(params["seed"]))
    started = time.perf_counter()
    segments = fit_segments(train, params, rng)
    if not any(label == 0 for label, _ in segments):
        raise ValueError("no legit segment has enough rows to fit; need a larger reference")
    sequencer = fit_sequencer(train, set(segments), params, rng)
    fit_seconds = time.perf_counter() - started
    report = {
        "quality": quality_report(
            train, segments, int(params["quality_rows"]), int(params["seed"])
        ),
        "fit_seconds": round(fit_seconds, 2),
        "segments": {
            s.name: {"rows": s.rows, "distribution": s.distribution} for s in segments.values()
        },
        "sequencer": _sequencer_summary(sequencer),
    }
    return SynthesizerBundle(segments, sequencer), report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging()
    quiet_libraries()
    try:
        params = load_params(args.params, "fit_synthesizer")
        bundle, report = fit_synthesizer(pd.read_parquet(args.reference), params)
    except (OSError, ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 1
    save_bundle(bundle, args.out)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2))
    for name, scores in report["quality"].items():
        log.info(
            "%s quality: overall %.3f, column shapes %.3f, pair trends %.3f",
            *(name, scores["overall"], scores["column_shapes"], scores["column_pair_trends"]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
