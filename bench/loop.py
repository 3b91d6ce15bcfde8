"""The feedback-loop benchmark: does the next day's model alert better because of the labels?

A simulated stream (training.lib.simulator) runs for `--days` days after a reference period;
on day `--novel-day` a fraud pattern the reference never holds starts (pattern 3: an account
emptied by its own cash-outs). Each day, for each strategy, the served model (loaded by the
scorer's own serving.model_store.ModelStore) scores the day's traffic, the scores are
written to a real Postgres through the scorer's writer (serving.persistence.ScoreWriter),
investigators label the day's review queue, built by the production job (jobs.review_queue),
through the real label path (serving.labels.record_label, with the queue's day, as the
console does), and the customer's other transactions of the day when an alert proves fraud
(the account is reviewed, as fraud teams do), and the real stages retrain on the reference
plus the labels: collect_feedback, featurize, train, evaluate, export, promote (its gate
decides; a promoted model is hot-loaded by the store). Strategies:

  a  no labels: the day-0 model serves throughout
  b  feedback on the top-k alerts only (exploit)
  c  the active-learning queue (exploit plus exploration near the thresholds and of ALLOW)
  d  c plus delayed labels (chargebacks for `--delayed-share` of frauds after `--delay`
     days), weighted apart from the analysts' feedback (featurize's per-kind weights)

The model trained after day t serves day t+1: the report is, per day and strategy, the
served model's P@k (k = the daily budget) and PR-AUC on that day's traffic, mean and spread
over the seeds, how many of the day's pattern-3 frauds made its top k, with each day's gate
decisions. The reference stands in for the synthetic
data (the synthesizer is not the subject here, and it would dominate the run time).

    python -m bench.loop --days 8 --seeds 5 [--out reports/loop]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudops import db
from fraudops.bands import bands_for
from fraudops.features import batch_features
from fraudops.params import load_params
from fraudops.review_queue import QueuePolicy
from fraudops.settings import load_settings
from jobs.review_queue import build_queue
from serving.labels import record_label
from serving.model_store import ModelStore
from serving.persistence import ScoreWriter
from serving.scoring import ScoredBatch
from testkit.pipeline_project import TINY, merged
from training.collect_feedback import collect_feedback
from training.evaluate import evaluate
from training.export import export_model
from training.featurize import featurize
from training.lib import metrics
from training.lib.simulator import SimConfig, simulate
from training.promote import promote
from training.train import train

log = logging.getLogger("fraudops.bench.loop")

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400
STRATEGIES = {
    "a": "no labels",
    "b": "top-k feedback",
    "c": "active-learning queue",
    "d": "queue + delayed labels, apart",
}


@dataclass(frozen=True)
class LoopConfig:
    """The stream and the team: sizes, budget, delays. Defaults fit a 2-core machine."""

    days: int = 8
    seeds: tuple[int, ...] = (1, 2, 3)
    novel_day: int = 1
    reference_days: int = 5
    n_users: int = 3000
    daily_budget: int = 100  # params.yaml queue.daily_budget
    explore_share: float = 0.3
    random_share: float = 0.3
    delay_days: int = 2
    delayed_share: float = 0.6
    novel_rate: float = 0.004  # pattern 3 episodes per customer per day
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    account_review: bool = True  # a confirmed fraud's other transactions of the day get labelled
    tiny_model: bool = False  # the pipeline tests' 2-epoch network instead of params.yaml's


@dataclass
class Stream:
    """One seed's traffic: reference rows (train, holdout) and the stream's days."""

    reference: pd.DataFrame
    days: list[pd.DataFrame]
    features: list[np.ndarray]
    start: int
    novel: list[np.ndarray]  # per day, which rows are pattern-3 frauds


def novel_frauds(frame: pd.DataFrame) -> np.ndarray:
    """Pattern 3's rows: fraudulent CASH_OUTs by a customer who received no fraudulent
    TRANSFER (pattern 1's cash-out is a mule's, after the takeover's transfer to it)."""
    fraud = frame["is_fraud"].to_numpy() == 1
    mules = frame.loc[fraud & (frame["type"] == "TRANSFER").to_numpy(), "dest_id"]
    return (
        fraud & (frame["type"] == "CASH_OUT").to_numpy() & ~frame["user_id"].isin(mules).to_numpy()
    )


@dataclass
class Lane:
    """One strategy's world: its database, its served-model directory, its store."""

    name: str
    url: str
    work: Path
    store: ModelStore
    log: list[dict[str, Any]] = field(default_factory=list)


def make_stream(cfg: LoopConfig, seed: int) -> Stream:
    """Simulate reference + stream; pattern 3 from the novel day on; features once, over
    all rows in time order (velocity looks back only, so a day's features are the ones
    the scorer would compute as the day's transactions arrive)."""
    base = load_params(ROOT / "params.yaml", "reference")
    total = cfg.reference_days + cfg.days
    sim = SimConfig(
        n_users=cfg.n_users,
        n_steps=24 * total,
        start=int(base["start"]),
        tx_per_user_day=float(base["tx_per_user_day"]),
        ato_rate=float(TINY["reference"]["ato_rate"]),
        card_testing_rate=float(TINY["reference"]["card_testing_rate"]),
        seed=seed,
        cash_drain_rate=cfg.novel_rate,
        cash_drain_from_step=24 * (cfg.reference_days + cfg.novel_day),
    )
    frame = simulate(sim)
    frame["transaction_id"] = [f"s{seed}-{i}" for i in range(len(frame))]
    frame["channel"] = ""
    features = batch_features(frame)
    novel = novel_frauds(frame)
    day = (frame["timestamp"].to_numpy() - sim.start) // DAY
    stream_days = [np.flatnonzero(day == cfg.reference_days + t) for t in range(cfg.days)]
    return Stream(
        reference=frame[day < cfg.reference_days].reset_index(drop=True),
        days=[frame.iloc[rows].reset_index(drop=True) for rows in stream_days],
        features=[features[rows] for rows in stream_days],
        start=sim.start + DAY * cfg.reference_days,
        novel=[novel[rows] for rows in stream_days],
    )


def stage_params(cfg: LoopConfig, experiment: str, model_name: str) -> dict[str, dict]:
    """params.yaml with the tiny data sizes the pipeline tests use, and the loop's gate.

    The network is params.yaml's unless `tiny_model`: the tests' 2-epoch one is far below
    the GBT baseline, so little that labels teach it survives into the ranking. The gate
    keeps its fresh-traffic check as it is; the synthetic test set (the reference holdout,
    which has no pattern 3) may not forbid learning the new pattern, so the candidate may
    trail the champion there a little, and the GBT floor is off on tiny data."""
    full = load_params(ROOT / "params.yaml")
    params = merged(full, TINY)
    if not cfg.tiny_model:
        params["train"] = merged(full["train"], {"explain_rows": TINY["train"]["explain_rows"]})
    return merged(
        params,
        {
            "train": {"experiment": experiment},
            "promote": {
                "registered_model": model_name,
                "min_pr_auc_gain": -0.05,
                "max_batch1_p99_us": 1_000_000,
            },
            "queue": {"daily_budget": cfg.daily_budget},
            "featurize": {"valid_fraction": 0.2},
        },
    )


def run_pipeline(
    work: Path, stream: Stream, params: dict, tracking_uri: str, url: str | None, serving: Path
) -> dict[str, Any]:
    """The stages after collect_feedback, called directly, as dvc.yaml runs them."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    result = data / "validation.json"
    result.write_text(json.dumps({"success": True, "failed": []}))
    cut = stream.reference["timestamp"].max() - DAY
    ref = stream.reference
    ref[ref["timestamp"] < cut].to_parquet(data / "train.parquet")
    ref[ref["timestamp"] >= cut].to_parquet(data / "holdout.parquet")
    feedback = data / "labels.parquet"
    features, candidate = work / "features", work / "candidate"
    featurize(
        data / "train.parquet",
        data / "holdout.parquet",
        feedback if feedback.exists() else None,
        result,
        features,
        params["featurize"],
    )
    train(features, candidate, params["train"], tracking_uri)
    eval_params = {**params["evaluate"], "daily_budget": params["queue"]["daily_budget"]}
    report = evaluate(features, candidate, serving, work / "metrics.json", work / "plots",
                      eval_params, tracking_uri)  # fmt: skip
    export_model(candidate, features, work / "export", work / "export.json", params["export"])
    decision = promote(work / "export", work / "metrics.json", work / "export.json", serving,
                       params["promote"], tracking_uri, url)  # fmt: skip
    decision["recent"] = _recent_summary(report.get("recent"))
    return decision


def _recent_summary(recent: dict[str, Any] | None) -> dict[str, Any] | None:
    if not recent:
        return None
    champion = recent.get("champion") or {}
    return {
        "rows": recent["rows"],
        "frauds": recent["frauds"],
        "candidate_pr_auc": recent["candidate"]["pr_auc"],
        "candidate_p_at_k": recent["candidate"].get("p_at_k"),
        "champion_pr_auc": champion.get("pr_auc"),
        "champion_p_at_k": champion.get("p_at_k"),
    }


def score_day(lane: Lane, stream: Stream, t: int) -> np.ndarray:
    """The served model scores day t; the rows go to scored_transactions as the scorer
    writes them."""
    model = lane.store.current
    day, x = stream.days[t], stream.features[t]
    scores = model.predict(x)
    batch = ScoredBatch(
        txs=day.to_dict("records"),
        scores=scores,
        bands=bands_for(scores, model.thresholds),
        reasons=[[] for _ in range(len(day))],
        model=model,
        latency_us=0,
        scored_at_ms=int(time.time() * 1000),
    )
    writer = ScoreWriter(lane.url)
    result = writer.write([(batch, "stream")])
    if result.refused:
        raise RuntimeError(f"{len(result.refused)} scored rows refused by Postgres")
    return scores


def label_day(lane: Lane, cfg: LoopConfig, stream: Stream, t: int, seed: int) -> dict[str, int]:
    """Investigators label the day's queue; (d) chargebacks arrive for frauds of day t-δ.

    A confirmed fraud is a compromised account: with `account_review` the investigator
    also labels the customer's other transactions of the day (the card-level feedback of
    fraud teams), which the budget k does not count (it counts alerts)."""
    frame = stream.days[t]
    truth = dict(zip(frame["transaction_id"], frame["is_fraud"].astype(int), strict=True))
    owner = dict(zip(frame["transaction_id"], frame["user_id"], strict=True))
    by_user = frame.groupby("user_id")["transaction_id"].agg(list).to_dict()
    explore = 0.0 if lane.name == "b" else cfg.explore_share
    policy = QueuePolicy(cfg.daily_budget, explore, cfg.random_share, seed)
    day = datetime.fromtimestamp(stream.start + t * DAY, UTC).date()
    conn = db.connect(lane.url)
    novel = dict(zip(frame["transaction_id"], stream.novel[t], strict=True))
    counts = {"reviewed": 0, "reviewed_fraud": 0, "account": 0, "delayed": 0}
    try:
        queue = build_queue(conn, day, policy)
        queued = {item.transaction_id for item in queue}
        for item in queue:
            fraud = truth[item.transaction_id]
            _verdict(conn, item.transaction_id, fraud, day)
            counts["reviewed"] += 1
            counts["reviewed_fraud"] += fraud
            if fraud and cfg.account_review:
                siblings = [x for x in by_user[owner[item.transaction_id]] if x not in queued]
                for tx in siblings:
                    _verdict(conn, tx, truth[tx])
                queued.update(siblings)
                counts["account"] += len(siblings)
        counts["labelled_novel"] = int(sum(novel[tx] for tx in queued))
        if lane.name == "d" and t >= cfg.delay_days:
            counts["delayed"] = _chargebacks(conn, cfg, stream, t - cfg.delay_days, seed)
    finally:
        conn.close()
    return counts


def _verdict(conn, transaction_id: str, fraud: int, queue_date: date | None = None) -> None:
    """An investigator's verdict; from the queue of `queue_date`, or (None) on an account review."""
    label = "FRAUD" if fraud else "LEGIT"
    record_label(conn, transaction_id, label, "analyst:sim", queue_date=queue_date)


def _chargebacks(conn, cfg: LoopConfig, stream: Stream, t: int, seed: int) -> int:
    """A seeded share of day t's frauds get a chargeback (those nobody labelled yet)."""
    frauds = stream.days[t].loc[stream.days[t]["is_fraud"] == 1, "transaction_id"].tolist()
    rng = np.random.default_rng([seed, t, 99])
    chosen = [f for f in frauds if rng.random() < cfg.delayed_share]
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT transaction_id FROM feedback_labels WHERE transaction_id = ANY(%s)", (chosen,)
        )
        known = {r[0] for r in cur.fetchall()}
    todo = [f for f in chosen if f not in known]
    for tx in todo:
        record_label(conn, tx, "FRAUD", "chargeback:sim")
    return len(todo)


def next_day_metrics(
    scores: np.ndarray, day: pd.DataFrame, novel: np.ndarray, k: int
) -> dict[str, float | None]:
    """P@k and PR-AUC on the day; how many of its pattern-3 frauds made the top k."""
    labels = day["is_fraud"].to_numpy(np.int8)
    summary = metrics.summarize(labels, scores, {"challenge": 1.0, "block": 1.0}, 0.01,
                                day["timestamp"].to_numpy(), k)  # fmt: skip
    top = np.argsort(-scores, kind="stable")[:k]
    return {"p_at_k": summary["p_at_k"], "pr_auc": summary["pr_auc"], "frauds": summary["frauds"],
            "novel": int(novel.sum()), "novel_in_top_k": int(novel[top].sum())}  # fmt: skip


def initial_model(work: Path, stream: Stream, params: dict, tracking_uri: str) -> Path:
    """Day 0: the model trained on the reference alone, published once per seed."""
    serving = work / "serving"
    decision = run_pipeline(work, stream, params, tracking_uri, None, serving)
    if decision["decision"] != "promoted":
        raise RuntimeError(f"the day-0 model was not promoted: {decision['reasons']}")
    return Path(decision["serving_path"])


def open_lane(name: str, root: Path, v0: Path, admin_url: str) -> Lane:
    """A strategy's own database and served-model directory, starting from the day-0 model."""
    work = root / name
    serving = work / "serving"
    serving.mkdir(parents=True, exist_ok=True)
    shutil.copytree(v0, serving / v0.name)
    url = db.create_database(admin_url, f"loop_{name}_{uuid.uuid4().hex[:8]}")
    db.migrate(url)
    store = ModelStore(serving, prewarm=1)
    store.load_latest()
    return Lane(name, url, work, store)


def retrain(lane: Lane, stream: Stream, params: dict, tracking_uri: str, t: int) -> dict:
    """collect_feedback then the stages; a promoted model is loaded by the lane's store."""
    data = lane.work / "data"
    collect_feedback(lane.url, data / "labels.parquet", data / "feedback.json", 0)
    own = f"{params['train']['experiment']}-{lane.name}"
    # One registered model per seed: its versions name the published directories, which
    # must not collide across the lanes (all start from the seed's day-0 version).
    lane_params = merged(params, {"train": {"experiment": own}})
    decision = run_pipeline(lane.work, stream, lane_params, tracking_uri, lane.url,
                            lane.store.serving_root)  # fmt: skip
    if decision["decision"] == "promoted":
        lane.store.consider(Path(decision["serving_path"]))
    checks = {c["name"]: c["passed"] for c in decision["checks"]}
    return {"decision": decision["decision"], "checks": checks, "recent": decision["recent"]}


def run_seed(cfg: LoopConfig, seed: int, root: Path, admin_url: str, tracking_uri: str) -> list:
    """Every strategy over the stream of one seed; rows of the per-day report."""
    stream = make_stream(cfg, seed)
    tag = uuid.uuid4().hex[:6]
    params = stage_params(cfg, f"loop-{tag}-s{seed}", f"loop-{tag}-s{seed}")
    root = root / f"seed{seed}"
    v0 = initial_model(root / "day0", stream, params, tracking_uri)
    lanes = [open_lane(name, root, v0, admin_url) for name in cfg.strategies]
    rows = []
    try:
        for t in range(cfg.days):
            for lane in lanes:
                scores = score_day(lane, stream, t)
                row = {"seed": seed, "day": t, "strategy": lane.name,
                       "model": lane.store.current.version,
                       **next_day_metrics(scores, stream.days[t], stream.novel[t],
                                         cfg.daily_budget)}  # fmt: skip
                if lane.name != "a" and t < cfg.days - 1:
                    row |= label_day(lane, cfg, stream, t, seed)
                    row["gate"] = retrain(lane, stream, params, tracking_uri, t)
                rows.append(row)
                log.info("seed %s day %s %s: %s", seed, t, lane.name, row)
    finally:
        for lane in lanes:
            db.drop_database(admin_url, lane.url.rsplit("/", 1)[-1])
    return rows


def summarise(rows: list[dict]) -> pd.DataFrame:
    """Per day and strategy: mean and standard deviation over seeds of P@k and PR-AUC."""
    frame = pd.DataFrame(rows)
    return (
        frame.groupby(["day", "strategy"])[["p_at_k", "pr_auc", "novel_in_top_k"]]
        .agg(["mean", "std", "count"])
        .round(4)
    )


def gains(rows: list[dict], cfg: LoopConfig) -> pd.DataFrame:
    """Per strategy, the gain over (a) on the same seed's stream, averaged over the days
    whose model was trained after the new pattern appeared: mean, sd and min over seeds.
    Paired by seed, so the streams' own spread does not hide a difference."""
    frame = pd.DataFrame(rows)
    frame = frame[frame["day"] > cfg.novel_day]
    per_seed = frame.groupby(["seed", "strategy"])[["p_at_k", "pr_auc"]].mean()
    base = per_seed.xs("a", level="strategy")
    gain = per_seed.sub(base, level="seed").drop(index="a", level="strategy")
    return gain.groupby("strategy").agg(["mean", "std", "min"]).round(4)


def gate_record(rows: list[dict], min_frauds: int) -> dict[str, int]:
    """Gate decisions, and how many promoted models trailed the champion on a recent
    labelled window the gate judged (at least `min_frauds` frauds; promote's
    min_recent_frauds), by PR-AUC or P@k: the number that must stay 0."""
    decisions = [r["gate"] for r in rows if "gate" in r]
    worse = unjudged = 0
    for gate in decisions:
        recent = gate["recent"] or {}
        if gate["decision"] != "promoted":
            continue
        if recent.get("champion_pr_auc") is None or recent["frauds"] < min_frauds:
            unjudged += 1
            continue
        worse += recent["candidate_pr_auc"] < recent["champion_pr_auc"] or (
            (recent.get("candidate_p_at_k") or 0.0) < (recent.get("champion_p_at_k") or 0.0)
        )
    promoted = sum(g["decision"] == "promoted" for g in decisions)
    return {"promoted": promoted, "rejected": len(decisions) - promoted,
            "promoted_unjudged": unjudged, "promoted_worse_on_recent": int(worse)}  # fmt: skip


def plot(summary: pd.DataFrame, cfg: LoopConfig, path: Path) -> Path:
    """P@k per day per strategy, mean with a band of one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in cfg.strategies:
        part = summary.xs(name, level="strategy")["p_at_k"]
        days = part.index.to_numpy()
        mean, std = part["mean"].to_numpy(), part["std"].fillna(0).to_numpy()
        ax.plot(days, mean, marker="o", label=f"({name}) {STRATEGIES[name]}")
        ax.fill_between(days, mean - std, mean + std, alpha=0.15)
    ax.axvline(cfg.novel_day, color="grey", linestyle=":", label="new fraud pattern starts")
    ax.set(xlabel="day of the stream", ylabel=f"alert precision P@{cfg.daily_budget}",
           title=f"Served model's P@k per day ({len(cfg.seeds)} seeds, mean ± sd)")  # fmt: skip
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def run_loop(cfg: LoopConfig, out: Path, admin_url: str, tracking_uri: str | None) -> dict:
    """Run every seed, write rows.json, summary.csv and loop.png under `out`."""
    out = Path(out).resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    rows = []
    # Inside the work directory: MLflow's local artifacts land there, and promote's
    # `dvc push` finds no DVC repository (the project's own remote is never touched).
    with contextlib.chdir(work):
        for seed in cfg.seeds:
            rows += run_seed(cfg, seed, work, admin_url, uri)
    min_frauds = int(load_params(ROOT / "params.yaml", "promote")["min_recent_frauds"])
    summary, gain, gate = summarise(rows), gains(rows, cfg), gate_record(rows, min_frauds)
    (out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))
    summary.to_csv(out / "summary.csv")
    gain.to_csv(out / "gains.csv")
    (out / "gate.json").write_text(json.dumps(gate, indent=2) + "\n")
    image = plot(summary, cfg, out / "loop.png")
    return {"config": asdict(cfg), "rows": rows, "summary": summary, "gains": gain,
            "gate": gate, "plot": image}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=LoopConfig.days)
    parser.add_argument("--seeds", type=int, default=len(LoopConfig.seeds), help="how many")
    parser.add_argument("--novel-day", type=int, default=LoopConfig.novel_day)
    parser.add_argument("--budget", type=int, default=LoopConfig.daily_budget)
    parser.add_argument("--delay", type=int, default=LoopConfig.delay_days)
    parser.add_argument("--delayed-share", type=float, default=LoopConfig.delayed_share)
    parser.add_argument("--users", type=int, default=LoopConfig.n_users)
    parser.add_argument("--out", type=Path, default=Path("reports/loop"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = replace(
        LoopConfig(),
        days=args.days,
        seeds=tuple(range(1, args.seeds + 1)),
        novel_day=args.novel_day,
        daily_budget=args.budget,
        delay_days=args.delay,
        delayed_share=args.delayed_share,
        n_users=args.users,
    )
    settings = load_settings()
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set (python -m devstack up postgres)")
    result = run_loop(cfg, args.out, settings.database_url, None)
    print(result["summary"].to_string())
    print(f"gain over (a), days {cfg.novel_day + 1}-{cfg.days - 1}, paired by seed:")
    print(result["gains"].to_string())
    print(f"gate: {result['gate']}")
    print(f"plot: {result['plot']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
