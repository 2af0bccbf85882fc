"""Recording a conversion: passing files into the run folder, every record into its manifest, the shipped bundle."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from asinfer.engine import FORMATS, Manifest
from asinfer.engine.bundle import ParityRecord
from asinfer.trainer.bundle import tool_versions, write_bundle

TOOLS = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy")
# copied into the shipped bundle beside the artifacts; train_config.json reproduces the run
EXTRA_FILES = ("*.png", "MODEL_CARD.md", "train_config.json")


def record(run_dir: Path, manifest: Manifest, records: dict[str, ParityRecord], tmp: Path) -> Manifest:
    """Move the passing files from ``tmp`` into the run folder and rewrite its manifest.

    A format that failed keeps its record in ``parity`` but loses its file
    and artifact entry (an earlier, passing file of it included): the
    manifest never lists a file its own parity record rejects.
    """
    for fmt, rec in records.items():
        name = FORMATS[fmt].filename
        if rec.passed:
            os.replace(tmp / name, run_dir / name)
        else:
            (run_dir / name).unlink(missing_ok=True)
    failed = {fmt for fmt, rec in records.items() if not rec.passed}
    files = {a.format: a.file for a in manifest.artifacts if (run_dir / a.file).is_file() and a.format not in failed}
    files.update({fmt: FORMATS[fmt].filename for fmt in records if fmt not in failed})
    updated = replace(manifest, artifacts=(), parity={**manifest.parity, **records},
                      tools={**manifest.tools, **tool_versions(TOOLS)})
    return write_bundle(run_dir, updated, files)


def ship(manifest: Manifest, run_dir: Path, out: Path, failed: tuple[str, ...]) -> Manifest:
    """Copy the shipped artifacts, plots and model card into ``out`` and write its manifest.

    A failed format's file left in ``out`` by an earlier conversion is removed.
    """
    out.mkdir(parents=True, exist_ok=True)
    for fmt in failed:
        (out / FORMATS[fmt].filename).unlink(missing_ok=True)
    files = {a.format: a.file for a in manifest.artifacts if FORMATS[a.format].shipped}
    extras = [p.name for pattern in EXTRA_FILES for p in sorted(run_dir.glob(pattern))]
    for name in [*files.values(), *extras]:
        shutil.copy2(run_dir / name, out / name)
    return write_bundle(out, replace(manifest, artifacts=(), created=""), files)
