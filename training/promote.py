"""promote: the gate between a trained candidate and the model the scorer serves.

The candidate passes when its TFLite export holds parity with Keras, meets the latency
bound, beats the current champion's PR-AUC on the same test set by `promote.min_pr_auc_gain`
(no champion: nothing to beat), is not worse than the gradient-boosted baseline by more
than `promote.max_gap_to_baseline`, and is not worse than the champion on fresh traffic:
on evaluate's `recent` window (the newest live labels, which neither model trained on)
its PR-AUC and alert precision P@k may trail the champion's by `promote.max_recent_drop`
at most. A model that fits the labelled rows better but the next day's traffic worse is
caught there, not by the synthetic test set.

Either way the export is registered in MLflow as a version of `promote.registered_model`,
tagged with its lineage and the decision, with alias `challenger`; each version is an MLflow
pyfunc model (`fraudops.mlflow_model`: raw transactions in, score and band out) that
`mlflow.pyfunc.load_model("models:/<name>@champion")` and `mlflow models serve` can run.
On a pass it is published to `<served-model directory>/v<registered version>` (atomic
rename; the scorers hot-reload it), the published directory becomes the version's MLflow
model byte for byte, alias `champion` moves to it, the promotion goes to the audit log when
DATABASE_URL is set, and `dvc push` sends the data and models behind it to the DVC remote.
A rejection publishes nothing; its MLflow model holds the export as it is. The served-model
directory is the one the scorers watch, `FRAUDOPS_MODEL_DIR` (fraudops.settings; relative
to the working directory, the project root under DVC and Airflow), so a promoted model
cannot land where nothing watches. reports/promotion.json records the decision; a
rejection exits 0 (it is a decision, not a failure), only errors exit non-zero.

    python -m training.promote --export models/export --metrics reports/metrics.json \
        --export-report reports/export.json --out reports/promotion.json [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fraudops.modelspec import MODEL_FILE, now_iso, publish, read_spec, write_spec
from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging
from fraudops.settings import load_settings
from training.lib import registry
from training.lib.registry import Registered

log = logging.getLogger("fraudops.promote")

CHALLENGER, CHAMPION = "challenger", "champion"


class PromotionError(RuntimeError):
    """Promotion could not be decided or carried out (bad input, registry, publish)."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _pr_auc(metrics: dict[str, Any], model: str) -> float | None:
    entry = metrics.get(model)
    if not entry:
        return None
    return float(entry["pr_auc"])


def quality_checks(metrics: dict[str, Any], params: dict[str, Any]) -> list[Check]:
    """Candidate vs champion and vs the GBT baseline, all scored on the same test set."""
    candidate = _pr_auc(metrics, "candidate")
    if candidate is None:
        raise PromotionError("metrics: no candidate PR-AUC")
    champion = _pr_auc(metrics, "champion")
    gain = float(params["min_pr_auc_gain"])
    if champion is None:
        vs_champion = Check("beats_champion", True, "no champion yet")
    else:
        vs_champion = Check(
            "beats_champion",
            candidate >= champion + gain,
            f"PR-AUC {candidate:.4f} vs champion {champion:.4f} (need a gain of {gain})",
        )
    # The baseline is a sanity floor, not a rival: the network is chosen because it exports
    # to a small TFLite model scored in microseconds, so it may trail the GBT by a little
    # (PR-AUC on a few hundred frauds is noisy), but a wide gap means training went wrong
    # (a feature bug, a diverged fit) even when an old champion happens to be weaker.
    baseline = _pr_auc(metrics, "baseline")
    max_gap = float(params["max_gap_to_baseline"])
    if baseline is None:
        raise PromotionError("metrics: no baseline PR-AUC")
    vs_baseline = Check(
        "near_baseline",
        candidate >= baseline - max_gap,
        f"PR-AUC {candidate:.4f} vs GBT baseline {baseline:.4f} (max gap {max_gap})",
    )
    return [vs_champion, vs_baseline]


RECENT_METRICS = {"pr_auc": "PR-AUC", "p_at_k": "P@k"}


def recent_check(metrics: dict[str, Any], params: dict[str, Any]) -> Check:
    """Candidate vs champion on the recent labelled window, both re-scored on its rows.

    Passes, saying why, when there is nothing to compare: no window, no champion, or too
    few frauds in it for a difference to mean anything."""
    recent = metrics.get("recent")
    if not recent:
        return Check("recent_not_worse", True, "no recent labelled window")
    champion = recent.get("champion")
    if not champion:
        return Check("recent_not_worse", True, "no champion scored on the recent window")
    frauds, least = int(recent["frauds"]), int(params["min_recent_frauds"])
    if frauds < least:
        return Check("recent_not_worse", True, f"{frauds} frauds in the recent window (< {least})")
    drop = float(params["max_recent_drop"])
    passed, parts = True, []
    for key, shown in RECENT_METRICS.items():
        cand, champ = recent["candidate"].get(key), champion.get(key)
        if cand is None or champ is None:
            continue
        passed &= cand >= champ - drop
        parts.append(f"{shown} {cand:.4f} vs champion {champ:.4f}")
    window = f"recent window ({recent['rows']} rows, {frauds} frauds)"
    return Check("recent_not_worse", passed, f"{window}: {'; '.join(parts)} (max drop {drop})")


def export_checks(report: dict[str, Any], params: dict[str, Any]) -> list[Check]:
    """The artifact itself: TFLite parity with Keras and the latency bound."""
    check = report["parity"]
    parity = Check(
        "parity",
        bool(check["passed"]) and check["max_abs_diff"] <= check["tolerance"],
        f"max abs diff {check['max_abs_diff']:.3g} (tolerance {check['tolerance']:.3g})",
    )
    bound = float(params["max_batch1_p99_us"])
    p99 = report.get("latency", {}).get("tflite", {}).get("batch1_p99_us")
    latency = Check(
        "latency",
        p99 is not None and p99 <= bound,
        f"TFLite batch-1 p99 {p99} us (bound {bound} us)",
    )
    return [parity, latency]


def decide(
    export_report: dict[str, Any], metrics: dict[str, Any], params: dict[str, Any]
) -> list[Check]:
    """Every gate check, in the order an operator reads them."""
    checks = export_checks(export_report, params) + quality_checks(metrics, params)
    return [*checks, recent_check(metrics, params)]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tag_decision(client, name: str, version: str, checks: list[Check], passed: bool) -> None:
    client.set_model_version_tag(name, version, "promotion", "passed" if passed else "rejected")
    failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.passed)
    if failed:
        client.set_model_version_tag(name, version, "rejection_reason", failed[:4000])
    client.set_model_version_tag(
        name, version, "gate", json.dumps([asdict(c) for c in checks])[:4000]
    )


def publish_version(
    export_dir: Path, serving: Path, version: str, name: str, metrics: dict[str, Any]
) -> Path:
    """Stage a copy of the export with its registry identity and test metrics in
    model.json, then publish it atomically as serving/v<version>. The export directory
    itself stays untouched: it is a DVC output."""
    with tempfile.TemporaryDirectory(prefix="fraudops-promote-") as tmp:
        stage = Path(tmp) / "model"
        shutil.copytree(export_dir, stage)
        spec = read_spec(stage)
        spec["registered_model"] = name
        spec["registered_version"] = int(version)
        spec["metrics"] = {**spec.get("metrics", {}), "test": metrics.get("candidate", {})}
        write_spec(stage, spec)
        return publish(stage, serving, f"v{version}")


def audit(database_url: str | None, kind: str, subject: str, detail: dict[str, Any]) -> bool:
    """Append to audit_log; without a database there is nothing to append to."""
    if not database_url:
        log.info("DATABASE_URL not set: no audit_log entry for %s", subject)
        return False
    from fraudops.db.audit import append_audit_alone

    append_audit_alone(database_url, kind, subject, detail)
    return True


def dvc_push(cwd: Path | None = None) -> str:
    """Send the data and models behind this promotion to the DVC remote, so the served
    version can be reproduced from its data hash. Outside a DVC repo: skipped, warned."""
    dvc = [sys.executable, "-m", "dvc"]
    root = subprocess.run([*dvc, "root"], cwd=cwd, capture_output=True, text=True)
    if root.returncode != 0:
        log.warning("not inside a DVC repository: skipping dvc push")
        return "skipped: not a DVC repository"
    push = subprocess.run([*dvc, "push"], cwd=cwd, capture_output=True, text=True)
    if push.returncode != 0:
        raise PromotionError(f"dvc push failed: {(push.stderr or push.stdout).strip()}")
    summary = push.stdout.strip().splitlines()
    log.info("dvc push: %s", summary[-1] if summary else "done")
    return "pushed"


def _load_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise PromotionError(f"{path}: missing") from err
    except json.JSONDecodeError as err:
        raise PromotionError(f"{path}: not JSON ({err})") from err


def fill_candidate(client, registered: Registered, export_dir: Path) -> None:
    """A rejected candidate's MLflow model: the export as it is, in a directory named after
    its model.json version (the checked loader holds the two equal)."""
    spec = read_spec(export_dir)
    with tempfile.TemporaryDirectory(prefix="fraudops-candidate-") as tmp:
        stage = Path(tmp) / spec["version"]
        shutil.copytree(export_dir, stage)
        registry.fill(client, registered, stage, spec["mlflow_run_id"])


def carry_out(
    client, name: str, registered: Registered, export_dir: Path, serving: Path, metrics, db_url
):
    """A passed candidate: push its data, publish it, store the published directory as the
    version's MLflow model, then move the aliases to it (`champion` never names a version
    that is not served, or that MLflow cannot load), then record it in the audit log."""
    version = registered.version
    pushed = dvc_push()
    path = publish_version(export_dir, serving, version, name, metrics)
    spec = read_spec(path)
    registry.fill(client, registered, path, spec["mlflow_run_id"])
    for alias in (CHALLENGER, CHAMPION):
        client.set_registered_model_alias(name, alias, version)
    log.info("published %s; alias %s -> %s version %s", path, CHAMPION, name, version)
    detail = {
        "registered_model": name,
        "registered_version": int(version),
        "mlflow_run_id": spec["mlflow_run_id"],
        "data_hash": spec["data_hash"],
        "git_commit": spec.get("git_commit"),
        "path": str(path),
        "metrics": metrics.get("candidate", {}),
    }
    audited = audit(db_url, "promotion", f"{name}/v{version}", detail)
    return {"serving_path": str(path), "dvc_push": pushed, "audit_logged": audited}


def promote(
    export_dir: Path,
    metrics_path: Path,
    export_report_path: Path,
    serving: Path,
    params: dict[str, Any],
    tracking_uri: str,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Gate, register and (on a pass) publish the export; returns promotion.json's content."""
    spec = read_spec(export_dir)
    metrics = _load_json(metrics_path)
    checks = decide(_load_json(export_report_path), metrics, params)
    passed = all(c.passed for c in checks)
    name = params["registered_model"]
    client = registry.client_for(tracking_uri)
    registered = registry.register(client, name, spec, _sha256(export_dir / MODEL_FILE))
    version = registered.version
    tag_decision(client, name, version, checks, passed)
    result: dict[str, Any] = {
        "decision": "promoted" if passed else "rejected",
        "checks": [asdict(c) for c in checks],
        "reasons": [f"{c.name}: {c.detail}" for c in checks if not c.passed],
        "registered_model": name,
        "registered_version": int(version),
        "mlflow_run_id": spec["mlflow_run_id"],
        "data_hash": spec["data_hash"],
        "decided_at": now_iso(),
    }
    if passed:
        result.update(
            carry_out(client, name, registered, export_dir, serving, metrics, database_url)
        )
    else:
        log.warning("candidate %s v%s rejected: %s", name, version, "; ".join(result["reasons"]))
        fill_candidate(client, registered, export_dir)
        client.set_registered_model_alias(name, CHALLENGER, version)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gate, register and publish the candidate.")
    parser.add_argument("--export", type=Path, required=True, help="models/export")
    parser.add_argument("--metrics", type=Path, required=True, help="reports/metrics.json")
    parser.add_argument("--export-report", type=Path, required=True, help="reports/export.json")
    parser.add_argument("--out", type=Path, required=True, help="reports/promotion.json")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings.log_level)
    params = load_params(args.params, "promote")
    try:
        result = promote(
            args.export,
            args.metrics,
            args.export_report,
            settings.model_dir,
            params,
            settings.mlflow_tracking_uri,
            settings.database_url,
        )
    except PromotionError as err:
        log.error("promotion failed: %s", err)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    log.info("decision: %s (%s)", result["decision"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
