"""The fitted synthesizer on disk: SDV's own pickles for the copulas, JSON for the
manifest and the sequencer, with a format version so that a stale bundle is refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.synthesizer.copula import Segment

MANIFEST = "manifest.json"


SEQUENCER = "sequencer.json"


FORMAT_VERSION = 1


@dataclass
class SynthesizerBundle:
    """Everything generate needs: the segments' copulas and the sequencer."""

    segments: dict[tuple[int, str], Segment]
    sequencer: dict


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
