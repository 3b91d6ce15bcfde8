"""Small MLflow helpers shared by train, evaluate and promote, so every stage names
experiments, lineage tags, datasets and pipeline runs the same way.

- the experiment is marked as a model-training experiment, so the MLflow UI opens it on its
  runs (not on the GenAI overview);
- the datasets a run read are logged as its dataset inputs: source = the data path, digest =
  the md5 DVC records for that file, schema and a small profile (never the rows);
- the runs of one pipeline run (one Airflow DAG run, or one `dvc repro` by hand) are children
  of one parent run, found or created by its `fraudops.pipeline_run` tag, since every stage is
  its own process.

The tracking URI is passed in (main() reads it from fraudops.settings); nothing here reads
the environment or talks to a server at import time."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.meta_dataset import MetaDataset

from jobs.common import TRIGGER_ENV

log = logging.getLogger(__name__)

# Lineage tags every training run carries (DESIGN section 4: run -> data hash -> commit).
TAG_DATA_HASH = "data_hash"
TAG_GIT_COMMIT = "git_commit"
TAG_ROLE = "fraudops.role"  # "candidate" (Keras), "baseline", "ablation" or "pipeline" (parent)
TAG_PIPELINE_RUN = "fraudops.pipeline_run"  # the key of the pipeline run a run belongs to
# Dataset input tag: "dvc" (digest is DVC's record) or "content" (md5 of the file as read).
TAG_DIGEST_SOURCE = "fraudops.digest_source"
TAG_DVC_RECORDED = "fraudops.dvc_recorded_md5"  # set when the file differs from DVC's record
# The experiment kind the MLflow 3 UI reads to choose its layout.
TAG_EXPERIMENT_KIND, MODEL_TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
# Set by Airflow in a task's environment; `dvc repro` passes it on to the stage's process.
AIRFLOW_DAG_ID, AIRFLOW_DAG_RUN_ID = "AIRFLOW_CTX_DAG_ID", "AIRFLOW_CTX_DAG_RUN_ID"
TAG_TRIGGER = "fraudops.trigger"  # what started the Airflow run (dags/fraud_training.py)


def use_experiment(tracking_uri: str, experiment: str) -> str:
    """Point mlflow at the server and the pipeline's experiment; return its id.

    A new experiment gets the model-training kind; a kind someone chose in the UI is kept."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.set_experiment(experiment)
    if TAG_EXPERIMENT_KIND not in found.tags:
        mlflow.set_experiment_tag(TAG_EXPERIMENT_KIND, MODEL_TRAINING_KIND)
    return found.experiment_id


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the enclosing git repository, or None outside one."""
    return _git(["rev-parse", "HEAD"], cwd)


def _git(args: list[str], cwd: Path | None) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _update(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


def files_hash(paths: Iterable[Path]) -> str:
    """md5 over the names and bytes of the given files: the data hash a run is tagged with."""
    digest = hashlib.md5()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        _update(digest, path)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    """md5 of a file's bytes: the hash DVC 3 computes and records for a file."""
    digest = hashlib.md5()
    _update(digest, Path(path))
    return digest.hexdigest()


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow params (`a.b`); MLflow stores params as strings."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


# --- datasets ---------------------------------------------------------------------------


class SplitDataset(MetaDataset):
    """A parquet split as MLflow records it: source, digest, schema and a profile (rows,
    frauds). MetaDataset carries no profile; the Dataset column and the run's inputs show it."""

    def __init__(self, source, name: str, digest: str, schema, profile: dict[str, Any]):
        self._profile = profile
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return super().to_dict() | {"profile": json.dumps(self._profile)}


@dataclass(frozen=True)
class DataInput:
    """A dataset and how a run used it (`context`: training, validation, test, ...)."""

    dataset: SplitDataset
    context: str
    tags: dict[str, str] = field(default_factory=dict)


def dvc_root(path: Path) -> Path | None:
    """The DVC project holding `path` (the nearest parent with a .dvc directory), or None."""
    for parent in Path(path).resolve().parents:
        if (parent / ".dvc").is_dir():
            return parent
    return None


def dvc_recorded_md5(root: Path, paths: Iterable[Path]) -> dict[Path, str | None]:
    """The md5 DVC recorded for each file (dvc.lock or a .dvc file; a file inside a
    directory out by that directory's manifest), read through DVC itself; None for a file
    DVC does not track."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    fs = DVCFileSystem(str(root))
    out: dict[Path, str | None] = {}
    for path in paths:
        try:
            info = fs.info(Path(path).resolve().relative_to(root).as_posix())
        except (OSError, DvcException):
            info = {}
        out[Path(path)] = (info.get("dvc_info") or {}).get("md5")
    return out


def _schema_and_profile(path: Path) -> tuple[Any, dict[str, Any]]:
    """The file's columns as an MLflow schema, and rows / frauds from its metadata and label
    column: the only data read is `is_fraud`."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from mlflow.models import infer_signature

    arrow = pq.read_schema(path)
    with warnings.catch_warnings():  # a hint about integer model inputs; this only describes
        warnings.simplefilter("ignore", UserWarning)
        schema = infer_signature(arrow.empty_table().to_pandas()).inputs
    rows = pq.ParquetFile(path).metadata.num_rows
    profile: dict[str, Any] = {"num_rows": rows, "num_columns": len(arrow.names)}
    if "is_fraud" in arrow.names:
        frauds = int(pc.sum(pq.read_table(path, columns=["is_fraud"])["is_fraud"]).as_py() or 0)
        profile |= {"frauds": frauds, "fraud_rate": round(frauds / rows, 6) if rows else 0.0}
    return schema, profile


def split_inputs(paths: Mapping[str, Path]) -> list[DataInput]:
    """Dataset inputs for {context: parquet path}. The digest is DVC's record of the file
    when DVC tracks it and the file still matches it (tag digest_source=dvc); otherwise
    (outside a DVC project, an untracked file, a file changed since) the md5 of the file as
    read (digest_source=content), which is the hash DVC would record for it."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    files = [Path(p) for p in paths.values()]
    root = dvc_root(files[0]) if files else None
    recorded = dvc_recorded_md5(root, files) if root else {}
    inputs = []
    for context, path in paths.items():
        path = Path(path)
        content, dvc_md5 = file_md5(path), recorded.get(path)
        tags = {TAG_DIGEST_SOURCE: "dvc" if dvc_md5 == content else "content"}
        if dvc_md5 not in (None, content):
            log.warning("%s differs from DVC's record %s: logging its content hash", path, dvc_md5)
            tags[TAG_DVC_RECORDED] = dvc_md5
        uri = path.resolve().relative_to(root).as_posix() if root else str(path)
        # By type, not resolve_dataset_source: MLflow registers two local-file source classes
        # and warns that a plain path matches both.
        source = get_dataset_source_from_json(json.dumps({"uri": uri}), source_type="local")
        schema, profile = _schema_and_profile(path)
        dataset = SplitDataset(source, path.stem, content, schema, profile)
        inputs.append(DataInput(dataset, context, tags))
    return inputs


def log_inputs(inputs: Iterable[DataInput]) -> None:
    """Log the dataset inputs to the active run (MLflow keeps one per dataset and context)."""
    inputs = list(inputs)
    if inputs:
        mlflow.log_inputs(
            datasets=[i.dataset for i in inputs],
            contexts=[i.context for i in inputs],
            tags_list=[i.tags for i in inputs],
        )


# --- pipeline runs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Pipeline:
    """One run of the pipeline: the key its MLflow parent run is found by, and its tags."""

    key: str
    name: str
    tags: dict[str, str] = field(default_factory=dict)


def local_pipeline_key(commit: str | None, params: dict[str, Any], data_hash: str) -> str:
    """The key of a pipeline run outside Airflow: git commit (and the uncommitted source
    diff), train params and features hash.

    One `dvc repro` has no id its stage processes can all see, so the run is named by what
    it trains on: a `dvc repro` retried after a failure joins the same parent (as an Airflow
    retry does), while new code, params or data start a new one. A repeat with all three
    unchanged re-runs nothing under DVC, so it does not merge two different runs."""
    diff = _git(["diff", "HEAD", "--", ".", ":(exclude)dvc.lock", ":(exclude)*.dvc"], None)
    inputs = json.dumps([diff or "", params, data_hash], sort_keys=True, default=str)
    digest = hashlib.sha256(inputs.encode()).hexdigest()[:12]
    return f"{(commit or 'nogit')[:12]}-{digest}"


def pipeline_of(environ: Mapping[str, str], local_key: str) -> Pipeline:
    """The Airflow DAG run this process is a task of (its context variables), or the local
    pipeline run named by `local_key`."""
    dag_id, run_id = environ.get(AIRFLOW_DAG_ID), environ.get(AIRFLOW_DAG_RUN_ID)
    if dag_id and run_id:
        tags = {"airflow.dag_id": dag_id, "airflow.dag_run_id": run_id}
        if environ.get(TRIGGER_ENV):  # the schedule, the labels' asset or the drift asset
            tags[TAG_TRIGGER] = environ[TRIGGER_ENV]
        return Pipeline(f"airflow:{dag_id}/{run_id}", f"{dag_id} {run_id}", tags)
    return Pipeline(f"local:{local_key}", f"pipeline {local_key}")


def pipeline_parent(experiment_id: str, pipeline: Pipeline) -> str:
    """The parent run of `pipeline` in the experiment, created (finished: it only groups)
    when no stage has made it yet. Should two processes race, the oldest one wins from then on."""
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_PIPELINE_RUN}` = '{pipeline.key}' and tags.`{TAG_ROLE}` = 'pipeline'"
        ),
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {TAG_PIPELINE_RUN: pipeline.key, TAG_ROLE: "pipeline", **pipeline.tags}
    tags["mlflow.note.content"] = f"The runs of pipeline run `{pipeline.key}`."
    run = client.create_run(experiment_id, run_name=pipeline.name, tags=tags)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@dataclass(frozen=True)
class RunContext:
    """What every run of one training shares: lineage tags, the pipeline's parent run and
    the datasets the runs read."""

    tags: dict[str, str]
    parent_run_id: str | None = None
    inputs: tuple[DataInput, ...] = ()

    @contextmanager
    def start(self, name: str, role: str) -> Iterator[mlflow.ActiveRun]:
        """A child run of the pipeline's parent, with the lineage tags and dataset inputs."""
        tags = {**self.tags, TAG_ROLE: role}
        with mlflow.start_run(run_name=name, parent_run_id=self.parent_run_id, tags=tags) as run:
            log_inputs(self.inputs)
            yield run


def log_to_run(
    run_id: str,
    metrics: dict[str, float] | None = None,
    artifacts: Iterable[Path] = (),
    tags: dict[str, str] | None = None,
    inputs: Iterable[DataInput] = (),
) -> None:
    """Add metrics, artifacts, tags and dataset inputs to an existing (finished) run, e.g.
    the candidate's held-out metrics and test set from evaluate, or the promotion decision
    from promote."""
    with mlflow.start_run(run_id=run_id):
        if metrics:
            mlflow.log_metrics(metrics)
        if tags:
            mlflow.set_tags(tags)
        log_inputs(inputs)
        for path in artifacts:
            mlflow.log_artifact(str(path))
