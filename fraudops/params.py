"""params.yaml: the pipeline's parameters, one section per stage. Read explicitly by
each stage's main(); nothing is read at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: Path = DEFAULT_PARAMS, section: str | None = None) -> dict[str, Any]:
    """The whole params file, or one stage's section; a missing section is an error."""
    with open(path) as fh:
        params = yaml.safe_load(fh) or {}
    if section is None:
        return params
    if section not in params:
        raise KeyError(f"{path}: no section {section!r} (sections: {sorted(params)})")
    return params[section]
