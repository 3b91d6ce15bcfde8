"""The loop, closed, with every part real: Kafka, Postgres, MLflow, Airflow.

1. `airflow dags test fraud_training` on a tiny project promotes v1 into models/serving.
2. A gRPC server and a Kafka scorer serve v1; live traffic (the simulator, a later period
   and another seed than the reference) streams in through FraudIngestion.SendTransaction.
3. Analysts label a share of it, every transaction v1 got wrong among them: half through
   Feedback.SubmitLabel, half as a chargeback feed on the labels topic (label consumer).
4. `fraud_label_watch` sees enough new labels and emits the feedback asset.
5. `airflow dags test fraud_training` again: collect_feedback exports exactly those labels,
   and v2, trained on them, is promoted; its MLflow run and model.json name the labels.
6. The running server and scorer load v2 with no restart; later traffic is scored by v2.

Prints the wall time of each step, and v1 vs v2 on the labelled traffic (evaluate's
feedback report: v1's served scores against v2, which learned from these labels) and on
the fresh traffic after the reload (which neither model saw)."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from confluent_kafka import Producer
from sklearn.metrics import average_precision_score

from fraudops import db
from fraudops.bands import bands_for
from fraudops.features import batch_features
from fraudops.proto_gen.fraud.v1 import fraud_pb2, fraud_pb2_grpc
from fraudops.schema import TRANSACTION_COLUMNS
from fraudops.settings import Settings
from jobs.common import FEEDBACK_ASSET_URI
from serving.model_store import load_model
from testkit.pipeline_project import BIN, airflow_env, make_project, run
from tests.helpers.airflow_home import asset_events
from tests.helpers.serving_env import (
    channel_to,
    issue_token,
    make_settings,
    query,
    service_process,
    wait_serving,
)
from tests.helpers.serving_env import wait_until as wait_for
from training.lib.simulator import SimConfig, simulate

pytestmark = pytest.mark.slow

LABEL_SHARE = 0.3  # of the transactions v1 got right, the share analysts also label
MIN_NEW_LABELS = 50


def airflow(args: list[str], project: Path, env: dict[str, str], timeout: float = 2400):
    result = run([str(BIN / "airflow"), *args], project, env, timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def live_traffic(seed: int, start: int, prefix: str) -> pd.DataFrame:
    """Simulated traffic of a later period than the reference, with more fraud."""
    cfg = SimConfig(
        n_users=400, n_steps=24, start=start, tx_per_user_day=3.0,
        ato_rate=0.02, card_testing_rate=0.02, seed=seed,
    )  # fmt: skip
    frame = simulate(cfg)[list(TRANSACTION_COLUMNS)].sort_values("timestamp", kind="stable")
    frame["transaction_id"] = prefix + frame["transaction_id"].astype(str)
    return frame.reset_index(drop=True)


def request_of(row: dict) -> fraud_pb2.TransactionRequest:
    fields = {k: row[k] for k in TRANSACTION_COLUMNS if k != "is_fraud"}
    fields = {k: (v.item() if hasattr(v, "item") else v) for k, v in fields.items()}
    return fraud_pb2.TransactionRequest(**fields, channel="web")


def stream(port: int, token: str, frame: pd.DataFrame) -> None:
    """Every row through FraudIngestion.SendTransaction (-> Kafka -> the scorer)."""
    with channel_to(port, token) as channel:
        stub = fraud_pb2_grpc.FraudIngestionStub(channel)
        for row in frame.to_dict("records"):
            stub.SendTransaction(request_of(row), timeout=30)


def scored(url: str, ids: list[str]) -> pd.DataFrame:
    rows = query(
        url,
        "SELECT transaction_id, score, band, model_version FROM scored_transactions"
        " WHERE transaction_id = ANY(%s)",
        (ids,),
    )
    return pd.DataFrame(rows, columns=["transaction_id", "score", "band", "model_version"])


def wait_scored(url: str, frame: pd.DataFrame, timeout: float = 300) -> pd.DataFrame:
    """The scores of every row of `frame`, joined with its ground truth."""
    ids = frame["transaction_id"].tolist()
    wait_for(lambda: len(scored(url, ids)) == len(ids), "every transaction scored", timeout, 1.0)
    return frame.merge(scored(url, ids), on="transaction_id")


def choose_labels(live: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Every transaction v1 got wrong (a missed fraud, a flagged legit one) and a random
    share of the rest, labelled with the truth."""
    wrong = (live["is_fraud"] == 1) == (live["band"] == "ALLOW")
    rng = np.random.default_rng(seed)
    picked = wrong | (rng.random(len(live)) < LABEL_SHARE)
    chosen = live[picked].copy()
    chosen["label"] = np.where(chosen["is_fraud"] == 1, "FRAUD", "LEGIT")
    chosen["v1_wrong"] = wrong[picked]
    return chosen.reset_index(drop=True)


def submit_labels(port: int, token: str, kafka: Settings, topic: str, chosen: pd.DataFrame):
    """Even rows through Feedback.SubmitLabel (a reviewer's desk: feedback labels), odd rows
    as a chargeback feed."""
    producer = Producer(kafka.kafka_config(**{"enable.idempotence": True}))
    with channel_to(port, token) as channel:
        stub = fraud_pb2_grpc.FeedbackStub(channel)
        for i, row in enumerate(chosen.itertuples()):
            label = fraud_pb2.Label.Value(row.label)
            if i % 2 == 0:
                request = fraud_pb2.LabelRequest(
                    transaction_id=row.transaction_id, label=label, source="test:loop-desk"
                )
                stub.SubmitLabel(request, timeout=30)
            else:
                request = fraud_pb2.LabelRequest(
                    transaction_id=row.transaction_id, label=label, source="chargeback:loop-test"
                )
                producer.produce(topic, request.SerializeToString())
    assert producer.flush(30) == 0


def serves(url: str, pid: int, version: str) -> bool:
    rows = query(
        url,
        "SELECT 1 FROM model_deployments WHERE version = %s AND host = %s AND pid = %s"
        " AND served_until IS NULL",
        (version, socket.gethostname(), pid),
    )
    return bool(rows)


def quality(truth: np.ndarray, scores: np.ndarray, thresholds: dict[str, float]) -> dict:
    """PR-AUC, and precision / recall of what the model flags (CHALLENGE or BLOCK)."""
    flagged, fraud = bands_for(scores, thresholds) >= 1, truth == 1
    return {
        "pr_auc": round(float(average_precision_score(fraud, scores)), 4),
        "flagged_precision": round(float(fraud[flagged].mean()), 4) if flagged.any() else None,
        "flagged_recall": round(float(flagged[fraud].mean()), 4),
    }


def fresh_comparison(serving_root: Path, first: pd.DataFrame, live_v2: pd.DataFrame) -> dict:
    """v1 and v2 on the traffic after the reload (neither trained on it): both rescored
    offline with the features the scorer computed (its users' state carried over from the
    first batch), v2's offline scores checked against the scores it served live."""
    both = pd.concat([first, live_v2[list(TRANSACTION_COLUMNS)]], ignore_index=True)
    x = batch_features({c: both[c].to_numpy() for c in TRANSACTION_COLUMNS})[len(first) :]
    truth = live_v2["is_fraud"].to_numpy()
    out: dict = {"rows": len(truth), "frauds": int(truth.sum())}
    for version in ("v1", "v2"):
        model = load_model(serving_root / version, prewarm=0)
        scores = model.predict(x)
        out[version] = quality(truth, scores, model.thresholds)
    np.testing.assert_allclose(scores, live_v2["score"].to_numpy(), atol=1e-4)
    return out


def feedback_quality(metrics: dict) -> dict:
    """v1 (the scores it served) vs v2 on the labelled traffic, from evaluate's report."""
    feedback = metrics["feedback"]

    def brief(summary: dict) -> dict:
        flagged = summary["bands"]["FLAGGED"]
        return {
            "pr_auc": summary["pr_auc"],
            "recall_at_fpr": summary["recall_at_fpr"],
            "flagged_precision": flagged["precision"],
            "flagged_recall": flagged["recall"],
        }

    return {
        "rows": feedback["rows"],
        "frauds": feedback["frauds"],
        "v1": brief(feedback["champion"]),
        "v2": brief(feedback["candidate"]),
        "corrections": feedback["corrections"],
    }


@pytest.fixture
def loop_env(tmp_path, mlflow_tracking_uri, database_url, kafka_settings, kafka_topics):
    """A tiny project, its Airflow home, a database of its own and fresh topics."""
    tag = uuid.uuid4().hex[:8]
    name = f"loop_{tag}"
    url = db.create_database(database_url, name)
    db.migrate(url)
    overrides = {
        "train": {"experiment": f"test-loop-{tag}"},
        # The gate's checks are tested in test_promote; here the loop must close on tiny,
        # noisy data, on a machine busy with the server and scorer.
        "promote": {
            "registered_model": f"fraud-detector-loop-{tag}",
            "min_pr_auc_gain": -1.0,
            "max_batch1_p99_us": 1_000_000,
            "max_recent_drop": 1.0,
        },
        "featurize": {"feedback_weight": 20.0},
        "label_watch": {"min_new_labels": MIN_NEW_LABELS},
    }
    project = make_project(tmp_path / "project", overrides)
    env = airflow_env(project, tmp_path / "airflow", MLFLOW_TRACKING_URI=mlflow_tracking_uri,
                      DATABASE_URL=url)  # fmt: skip
    airflow(["db", "migrate"], project, env, timeout=600)
    settings = make_settings(
        database_url=url,
        client_token=issue_token(url, "tests-all"),
        **kafka_settings.kafka_login(),
        model_dir=project / "models" / "serving",
        consumer_group=f"loop-{tag}",
        **kafka_topics(),
    )
    yield project, env, settings
    db.drop_database(database_url, name)


def train_and_promote(project: Path, env: dict[str, str], expected_version: str) -> dict:
    """One `airflow dags test fraud_training`; the promotion report of the run."""
    output = airflow(["dags", "test", "fraud_training"], project, env)
    assert re.findall(r"DagRun Finished: dag_id=fraud_training.*?state=(\w+)", output)[-1] == (
        "success"
    )
    promotion = json.loads((project / "reports" / "promotion.json").read_text())
    assert promotion["decision"] == "promoted", promotion
    assert f"v{promotion['registered_version']}" == expected_version
    return promotion


def check_lineage(project: Path, chosen: pd.DataFrame, labelled_at: list, promotion, uri) -> dict:
    """v2's inputs, MLflow run and model.json all name exactly the labels submitted."""
    from mlflow import MlflowClient

    exported = pq.read_table(project / "data" / "feedback" / "labels.parquet").to_pandas()
    exported = exported[exported["label"].notna()]  # the rest is the labelled users' context
    assert sorted(exported["transaction_id"]) == sorted(chosen["transaction_id"])
    truth = dict(zip(chosen["transaction_id"], chosen["label"], strict=True))
    assert dict(zip(exported["transaction_id"], exported["label"], strict=True)) == truth
    assert set(exported["model_version"]) == {"v1"}
    when = pd.to_datetime(pd.Series(labelled_at), utc=True)
    window = f"{when.min().isoformat()}..{when.max().isoformat()}"
    run_info = MlflowClient(tracking_uri=uri).get_run(promotion["mlflow_run_id"])
    assert run_info.data.tags["labels_count"] == str(len(chosen))
    assert run_info.data.tags["labels_window"] == window
    spec = json.loads((project / "models" / "serving" / "v2" / "model.json").read_text())
    assert spec["labels"]["count"] == len(chosen)
    assert spec["mlflow_run_id"] == promotion["mlflow_run_id"]
    return {"count": len(chosen), "window": window, "mlflow_run_id": promotion["mlflow_run_id"]}


@pytest.mark.timeout(3600)
def test_labels_retrain_and_the_new_model_reaches_live_scoring(loop_env, tmp_path, capsys):
    project, env, settings = loop_env
    url = settings.database_url
    timings, started = {}, time.monotonic()

    def lap(step: str) -> None:
        timings[step] = round(time.monotonic() - started - sum(timings.values()), 1)

    train_and_promote(project, env, "v1")
    lap("1 train and promote v1")

    reference = yaml.safe_load((project / "params.yaml").read_text())["reference"]
    later = int(reference["start"]) + int(reference["n_steps"]) * 3600 + 86_400
    first, second = live_traffic(101, later, "live1-"), live_traffic(202, later + 86_400, "live2-")
    with (
        service_process("serving.server", settings, tmp_path / "server.log") as server,
        service_process("serving.scorer", settings, tmp_path / "scorer.log") as scorer,
        service_process("serving.label_consumer", settings, tmp_path / "labels.log") as labels,
    ):
        with channel_to(settings.grpc_port) as channel:
            wait_serving(channel, timeout=120)
        stream(settings.grpc_port, settings.client_token, first)
        live_v1 = wait_scored(url, first)
        assert set(live_v1["model_version"]) == {"v1"}
        lap("2 stream and score with v1")

        chosen = choose_labels(live_v1, seed=7)
        assert chosen["v1_wrong"].any() and len(chosen) >= MIN_NEW_LABELS
        submit_labels(
            settings.grpc_port, settings.client_token, settings, settings.topic_labels, chosen
        )
        ids = chosen["transaction_id"].tolist()
        sql = "SELECT labelled_at FROM feedback_labels WHERE transaction_id = ANY(%s)"
        wait_for(lambda: len(query(url, sql, (ids,))) == len(ids), "every label stored", 120, 0.5)
        labelled_at = [r[0] for r in query(url, sql, (ids,))]
        lap("3 label")

        airflow(["dags", "test", "fraud_label_watch"], project, env)
        [event] = asset_events(Path(env["AIRFLOW_HOME"]), FEEDBACK_ASSET_URI)
        assert event["count"] == len(chosen)
        lap("4 label watch emits the feedback asset")

        promotion = train_and_promote(project, env, "v2")
        lineage = check_lineage(project, chosen, labelled_at, promotion, env["MLFLOW_TRACKING_URI"])
        lap("5 retrain and promote v2")

        for proc in (server, scorer):
            wait_for(lambda p=proc: serves(url, p.pid, "v2"), f"pid {proc.pid} serving v2", 60)
        assert server.poll() is None and scorer.poll() is None and labels.poll() is None
        stream(settings.grpc_port, settings.client_token, second)
        live_v2 = wait_scored(url, second)
        assert set(live_v2["model_version"]) == {"v2"}
        lap("6 hot reload and score with v2")

    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    report = {
        "wall_seconds": round(time.monotonic() - started, 1),
        "steps_seconds": timings,
        "labels": {**lineage, "v1_wrong_labelled": int(chosen["v1_wrong"].sum())},
        "labelled_traffic": feedback_quality(metrics),
        "fresh_traffic": fresh_comparison(settings.model_dir, first, live_v2),
    }
    with capsys.disabled():
        print("\nfeedback loop:", json.dumps(report, indent=2, default=str))
    (tmp_path / "feedback_loop.json").write_text(json.dumps(report, indent=2, default=str))
