"""The one TFLite runner, and the checked loader of a model directory.

Everything that scores a `.tflite` goes through `TfliteRunner`: the scorer and the inline
server, export's parity, golden and latency measurements, evaluate's champion and the
registered MLflow model. So the numbers export checked and evaluate judged come from the
code that serves. It needs ai-edge-litert's interpreter and numpy only: no TensorFlow, so it
runs in the light serving install.

`load_model` is the one check a model directory passes before anything scores with it:
model.json meets the feature contract and names its directory, the interpreter's tensors
take the feature vector, and the golden rows reproduce within their tolerance. A model that
fails raises ModelRejected naming the problem; evaluate and MLflow refuse it exactly as the
scorer does."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fraudops.bands import Explainer
from fraudops.features import N_FEATURES
from fraudops.modelspec import MODEL_FILE, ModelSpecError, published_versions, read_spec

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # the predecessor package, where ai-edge-litert is not available
    from tflite_runtime.interpreter import Interpreter

# One interpreter thread per invoke. Concurrency comes from running several runners at once
# (one per in-flight request, see LoadedModel) and from scorer processes; intra-op threads
# on a network this small cost more in hand-off than they save and take the cores the
# other runners need.
INTERPRETER_THREADS = 1
# Batches are padded up to a power of two, so each runner allocates at most this many
# tensor shapes; larger batches are cut into MAX_BUCKET chunks.
MAX_BUCKET = 4096
DEFAULT_TOLERANCE = 1e-4


class ModelRejected(Exception):
    """A model directory failed a check; the message says which and why."""


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class TfliteRunner:
    """Interpreters for one model, one per bucket size, owned by one caller at a time
    (TFLite interpreters are not thread-safe)."""

    def __init__(self, content: bytes):
        self._content = content
        self._by_bucket: dict[int, tuple[Any, int, int]] = {}

    def _interpreter(self, bucket: int) -> tuple[Any, int, int]:
        entry = self._by_bucket.get(bucket)
        if entry is None:
            interp = Interpreter(model_content=self._content, num_threads=INTERPRETER_THREADS)
            in_idx = interp.get_input_details()[0]["index"]
            interp.resize_tensor_input(in_idx, [bucket, N_FEATURES])
            interp.allocate_tensors()
            entry = (interp, in_idx, interp.get_output_details()[0]["index"])
            self._by_bucket[bucket] = entry
        return entry

    def run(self, x: np.ndarray) -> np.ndarray:
        """Scores of a float32 (N, F) array, as float32 (N,)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        out = np.empty(n, dtype=np.float32)
        for start in range(0, n, MAX_BUCKET):
            chunk = x[start : start + MAX_BUCKET]
            size = len(chunk)
            bucket = _bucket(size)
            interp, in_idx, out_idx = self._interpreter(bucket)
            if size != bucket:
                padded = np.zeros((bucket, N_FEATURES), dtype=np.float32)
                padded[:size] = chunk
                chunk = padded
            interp.set_tensor(in_idx, chunk)
            interp.invoke()
            out[start : start + size] = interp.get_tensor(out_idx).reshape(-1)[:size]
        return out


def check_signature(content: bytes) -> list[int]:
    """The interpreter loads and its tensors match the feature contract, (N, F) -> (N, 1);
    returns the input's shape signature."""
    try:
        interp = Interpreter(model_content=content, num_threads=INTERPRETER_THREADS)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelRejected(f"{MODEL_FILE} does not load: {err}") from err
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelRejected(f"expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}")
    in_shape = [int(d) for d in inputs[0]["shape_signature"]]
    if len(in_shape) != 2 or in_shape[1] != N_FEATURES or inputs[0]["dtype"] != np.float32:
        raise ModelRejected(f"input is {in_shape} {inputs[0]['dtype']}, need [-1, {N_FEATURES}]")
    out_shape = list(outputs[0]["shape_signature"])
    if out_shape not in ([-1, 1], [-1], [1, 1], [1]):
        raise ModelRejected(f"output is {out_shape}, need [-1, 1]")
    if in_shape[0] not in (-1, 1):
        raise ModelRejected(f"input batch dimension is {in_shape[0]}, need -1")
    return in_shape


@dataclass
class LoadedModel:
    """A checked model, immutable once built; share it freely between threads. Each call
    of `predict` borrows a runner from the pool for the length of its invoke."""

    version: str
    path: Path
    spec: dict[str, Any]
    content: bytes = field(repr=False)
    explainer: Explainer = field(repr=False)
    _pool: queue.SimpleQueue = field(default_factory=queue.SimpleQueue, repr=False)

    @property
    def thresholds(self) -> dict[str, float]:
        return self.spec["thresholds"]

    @property
    def published_at(self) -> str:
        return self.spec["published_at"]

    @property
    def mlflow_run_id(self) -> str:
        return str(self.spec.get("mlflow_run_id", ""))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Fraud probabilities of a float32 (N, F) batch; safe from any thread."""
        try:
            runner = self._pool.get_nowait()
        except queue.Empty:
            runner = TfliteRunner(self.content)
        try:
            return runner.run(features)
        finally:
            self._pool.put(runner)

    def prewarm(self, runners: int, buckets: tuple[int, ...] = (1, 8)) -> None:
        """Build interpreters ahead of the first requests, off the request path."""
        for _ in range(runners):
            runner = TfliteRunner(self.content)
            for bucket in buckets:
                runner.run(np.zeros((bucket, N_FEATURES), dtype=np.float32))
            self._pool.put(runner)


def _check_golden(model: LoadedModel) -> float:
    """Score the golden inputs stored in model.json; return the largest error."""
    golden = model.spec["golden"]
    inputs = np.asarray(golden["inputs"], dtype=np.float32)
    expected = np.asarray(golden["outputs"], dtype=np.float64).reshape(-1)
    if inputs.ndim != 2 or inputs.shape[1] != N_FEATURES:
        raise ModelRejected(f"golden inputs have shape {inputs.shape}, need (n, {N_FEATURES})")
    got = model.predict(inputs).astype(np.float64)
    error = float(np.max(np.abs(got - expected)))
    tolerance = float(golden.get("tolerance", DEFAULT_TOLERANCE))
    if not error <= tolerance:
        raise ModelRejected(f"golden outputs off by {error:.3g} (tolerance {tolerance:g})")
    return error


def _read(model_dir: Path) -> tuple[dict[str, Any], bytes]:
    try:
        spec = read_spec(model_dir)
        content = (model_dir / MODEL_FILE).read_bytes()
    except ModelSpecError as err:
        raise ModelRejected(str(err)) from err
    except OSError as err:
        raise ModelRejected(f"{model_dir / MODEL_FILE}: unreadable ({err})") from err
    if spec["version"] != model_dir.name:
        raise ModelRejected(
            f"model.json says version {spec['version']!r}, the directory is {model_dir.name!r}"
        )
    declared = spec.get("input", {}).get("shape", [-1, N_FEATURES])
    if list(declared)[-1:] != [N_FEATURES]:
        raise ModelRejected(f"model.json input shape {declared} does not end in {N_FEATURES}")
    return spec, content


def load_model(model_dir: Path, prewarm: int = 2) -> LoadedModel:
    """Load and check one model directory; raise ModelRejected naming the problem."""
    model_dir = Path(model_dir)
    spec, content = _read(model_dir)
    check_signature(content)
    try:
        explainer = Explainer(spec["explain"])
    except (KeyError, TypeError, ValueError) as err:
        raise ModelRejected(f"model.json explain block unusable: {err}") from err
    model = LoadedModel(spec["version"], model_dir, spec, content, explainer)
    _check_golden(model)
    model.prewarm(prewarm)
    return model


def newest_valid(serving_root: Path) -> tuple[LoadedModel | None, list[tuple[str, str]]]:
    """The model a scorer starting now would serve (the newest publication that passes
    `load_model`), and the (version, problem) of each newer one it would reject."""
    rejected: list[tuple[str, str]] = []
    if not Path(serving_root).is_dir():
        return None, rejected
    for version, _spec in reversed(published_versions(serving_root)):
        try:
            return load_model(Path(serving_root) / version, prewarm=0), rejected
        except ModelRejected as err:
            rejected.append((version, str(err)))
    return None, rejected
