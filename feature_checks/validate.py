"""Stage `validate`: run the expectation suite on a batch; nothing downstream runs unless
it passes.

Writes `<report-dir>/result.json` (success, the failed expectations with their observed
values, row count, the batch file's SHA-256) and Great Expectations' Data Docs HTML under
`<report-dir>/data_docs/`, prints a readable summary, and exits 0 when the batch passes,
1 when it fails, 2 when it cannot be checked at all (unreadable batch or reference; the
result then records the error, so a stale success can never be mistaken for this run's).

GX runs in an ephemeral context with in-memory stores: the only files it writes are the
Data Docs, inside the report directory. Analytics are off (GX_ANALYTICS_ENABLED=False and
analytics_enabled=False in the context's config), so it never calls home."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from fraudops.params import DEFAULT_PARAMS, load_params
from fraudops.pii import configure_logging

log = logging.getLogger("feature_checks.validate")

RESULT_FILE = "result.json"
DOCS_DIR = "data_docs"
SITE = "fraudops"
SHOWN_VALUES = 10  # unexpected values kept per failed expectation


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _context(docs_dir: Path):
    """An ephemeral GX context whose only on-disk output is the Data Docs site."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"  # read by GX; set before it is imported
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(docs_dir.resolve()),
        },
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_checks(batch: pd.DataFrame, reference: pd.DataFrame, params: dict, docs_dir: Path):
    """Validate the batch with a checkpoint that also renders the Data Docs."""
    context = _context(docs_dir)
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    from feature_checks.suites import ReferenceProfile, build_suite

    suite = context.suites.add(build_suite(ReferenceProfile.from_frame(reference), params))
    asset = context.data_sources.add_pandas("batch").add_dataframe_asset("transactions")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(
            name="transactions", data=asset.add_batch_definition_whole_dataframe("all"), suite=suite
        )
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="validate",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[SITE])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    return checkpoint.run(batch_parameters={"dataframe": batch})


def _jsonable(value):
    """GX results hold numpy scalars and condition objects; JSON gets plain values."""
    return json.loads(
        json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    )


def _failure(outcome) -> dict:
    """One failed expectation: what was expected and what was observed."""
    config, result = outcome.expectation_config, outcome.result or {}
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("column", "batch_id")}
    failure = {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "kwargs": kwargs,
        "observed_value": result.get("observed_value"),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_percent": result.get("unexpected_percent"),
        "unexpected_values": (result.get("partial_unexpected_list") or [])[:SHOWN_VALUES],
        "details": result.get("details"),  # e.g. the observed vs expected type partition
    }
    if outcome.exception_info and outcome.exception_info.get("raised_exception"):
        failure["error"] = outcome.exception_info.get("exception_message")
    return _jsonable(failure)


def summarise(checkpoint_result, n_rows: int) -> dict:
    """success, counts and failures of the (single) validation in a checkpoint result."""
    (validation,) = checkpoint_result.run_results.values()
    stats = validation.statistics
    return {
        "success": bool(checkpoint_result.success),
        "row_count": n_rows,
        "evaluated": int(stats["evaluated_expectations"]),
        "successful": int(stats["successful_expectations"]),
        "failed": [_failure(r) for r in validation.results if not r.success],
    }


def validate_batch(batch_path: Path, reference_path: Path, params: dict, report_dir: Path):
    """Validate a batch file against the suite built from the reference; write the result
    and the Data Docs into report_dir and return the result."""
    docs_dir = report_dir / DOCS_DIR
    shutil.rmtree(docs_dir, ignore_errors=True)  # only this run's pages
    docs_dir.mkdir(parents=True)
    started = time.perf_counter()
    batch = pd.read_parquet(batch_path)
    checkpoint_result = run_checks(batch, pd.read_parquet(reference_path), params, docs_dir)
    result = {
        **summarise(checkpoint_result, len(batch)),
        "batch": str(batch_path),
        "batch_sha256": file_sha256(batch_path),
        "reference": str(reference_path),
        "data_docs": str(Path(DOCS_DIR) / "index.html"),
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (report_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))
    return result


def format_summary(result: dict) -> str:
    """The result for a person reading the pipeline's log."""
    verdict = "PASSED" if result["success"] else "FAILED"
    lines = [
        f"validation {verdict}: {result['batch']} ({result['row_count']} rows), "
        f"{result['successful']}/{result['evaluated']} expectations met"
    ]
    for f in result["failed"]:
        where = f" on {f['column']}" if f["column"] else ""
        what = f"observed {f['observed_value']!r}" if f["observed_value"] is not None else ""
        if f["unexpected_count"]:
            what = (
                f"{f['unexpected_count']} unexpected ({f['unexpected_percent']:.4g}%), "
                f"e.g. {f['unexpected_values'][:5]}"
            )
        lines.append(f"  x {f['expectation']}{where}: {f.get('error') or what}")
    lines.append(f"Data Docs: {result['data_docs']} (in the report directory)")
    return "\n".join(lines)


def _record_error(report_dir: Path, batch_path: Path, error: Exception) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    result = {"success": False, "batch": str(batch_path), "error": str(error), "failed": []}
    (report_dir / RESULT_FILE).write_text(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--batch", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--report-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging()
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    try:
        params = load_params(args.params, "validate")
        result = validate_batch(args.batch, args.reference, params, args.report_dir)
    except (OSError, ValueError, KeyError) as exc:
        log.error("cannot validate %s: %s", args.batch, exc)
        _record_error(args.report_dir, args.batch, exc)
        return 2
    print(format_summary(result))
    return 0 if result["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
