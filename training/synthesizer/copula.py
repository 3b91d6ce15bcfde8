"""The row model: one SDV GaussianCopulaSynthesizer per (class, type) segment.

One copula per segment keeps the fraud patterns from being blurred into the legit majority
(and gives each type its own amount distribution). Marginals are `truncnorm` for legit
segments (fast to sample at millions of rows) and `gaussian_kde` for fraud ones
(multi-modal: card-testing probes vs the purchase; few rows, so the KDE's numerical
inversion stays cheap). Segments with fewer than `min_segment_rows` rows are not modelled.
SDV imports torch (about 15 s), so it is imported only where a copula is fitted or loaded."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.synthesizer.representation import CLASSES, NUMERIC, encode_rows

log = logging.getLogger(__name__)


TABLE = "transactions"


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


def table_metadata(columns, numeric: tuple[str, ...] = NUMERIC):
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
            table_metadata(data.columns),
            enforce_min_max_values=True,
            default_distribution=distribution,
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
