"""Convert a training run to ONNX and LiteRT, checking every result against Keras.

Input is a run directory as training writes it::

    RUN_DIR/manifest.json     engine Manifest with the "keras" artifact
    RUN_DIR/model.keras       the trained model (the parity reference)
    RUN_DIR/parity.npz        images uint8 [N,S,S,1], labels int8 [N]: every slice calibration did not use
                              (training rest, validation, test; at most 1,000)
    RUN_DIR/holdout.npz       the test split; parity is measured on it in runs without parity.npz
    RUN_DIR/calibration.npz   images uint8 [M,S,S,1]: preprocessed training slices

Each format of :data:`asinfer.engine.FORMATS` has one converter in :data:`CONVERTERS`.
Each converted file runs on the parity slices through its runtime's runner
(:mod:`asinfer.trainer.runtimes`, the code ``asinfer bench`` times), is
compared with Keras by :func:`asinfer.engine.bundle.measure_parity` and judged
by its format's :class:`~asinfer.engine.Tolerance` (or one given in
``tolerances``). A format that fails is recorded with its numbers and
failing verdict but not written; the formats that pass are.

Public API: :func:`convert`, :class:`ConvertResult`, :data:`CONVERTERS`,
:func:`parse_tolerances`; and the int8 decisions, public so that they can be
tested and reused: :func:`round_first_conv`, :func:`rank_trial`,
:func:`choose_reduce_range`.

TensorFlow, tf2onnx and onnx are imported inside the functions that use them.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

from asinfer.engine import FORMATS, Manifest, Tolerance, get_format
from asinfer.engine.bundle import ParityRecord
from asinfer.trainer.runtimes import RUNTIMES

from . import _write
from ._explain import add_explanation_outputs
from ._int8 import choose_reduce_range, onnx_int8, rank_trial
from ._job import Job, open_job
from ._litert import tflite
from ._onnx import onnx_fp32, onnx_fp16
from ._rounding import round_first_conv
from ._tolerance import failure_message, parse_tolerances, resolve

__all__ = ["CONVERTERS", "ConvertResult", "choose_reduce_range", "convert", "parse_tolerances", "rank_trial",
           "round_first_conv"]

log = logging.getLogger("asinfer.trainer")

#: format name -> converter(job, destination) -> settings recorded in the format's ParityRecord.
CONVERTERS: dict[str, Callable[[Job, Path], dict]] = {
    "onnx-fp32": onnx_fp32,
    "onnx-fp16": onnx_fp16,
    "onnx-int8": onnx_int8,
    "tflite-fp32": functools.partial(tflite, "fp32"),
    "tflite-fp16": functools.partial(tflite, "fp16"),
    "tflite-int8": functools.partial(tflite, "int8"),
}

# A format added to the table without a converter (or a stale converter) must fail at import, not mid-run.
if set(CONVERTERS) != set(FORMATS) - {"keras"} or {FORMATS[f].runtime for f in CONVERTERS} - set(RUNTIMES):
    raise ImportError(f"asinfer.trainer.convert is out of step with engine.FORMATS: converters for "
                      f"{sorted(CONVERTERS)}, formats {sorted(FORMATS)}; add the missing converter or runtime")


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote, and which formats failed their parity check."""

    manifest: Manifest  # the manifest written: the bundle's when ``out`` was given, else the run's
    folder: Path  # the folder holding that manifest.json
    converted: tuple[str, ...]  # the formats converted this time, in order
    failed: tuple[str, ...] = ()  # of those, the ones outside their tolerance: recorded, not written

    @property
    def ok(self) -> bool:
        """Every converted format passed."""
        return not self.failed

    @property
    def records(self) -> dict[str, ParityRecord]:
        """The parity record of each format converted this time (failed ones included)."""
        return {fmt: self.manifest.parity[fmt] for fmt in self.converted}

    def problems(self) -> list[str]:
        """One message per failed format: its numbers, and the option that accepts them."""
        return [failure_message(fmt, self.manifest.parity[fmt]) for fmt in self.failed]


def convert(run_dir: Path, formats: Sequence[str] | None = None, out: Path | None = None,
            calibration: Path | None = None, tolerances: Mapping[str, Tolerance] | None = None,
            threads: int | None = None, progress: Callable[[str], None] | None = None) -> ConvertResult:
    """Convert a training run's Keras model, parity-check each result, and record it.

    Every requested format is converted and judged. One that passes is
    written to the run folder and its manifest (and, when shipped, to
    ``out``); one that fails is recorded in ``manifest.parity`` with its
    numbers and failing verdict, without a file or artifact entry.

    Args:
        run_dir: a training run folder (see the module docstring).
        formats: names from :data:`asinfer.engine.FORMATS`; default every format but ``keras``.
        out: when given, a bundle folder that receives the *shipped* formats
            (``FORMATS[f].shipped``) among the run's artifacts, plus ``*.png``,
            ``MODEL_CARD.md`` and ``train_config.json``; its manifest keeps the
            parity of every format.
        calibration: images for int8 calibration instead of
            ``run_dir/calibration.npz``: a dataset folder or CSV (read and
            preprocessed with the engine), or an ``.npz`` holding ``images``.
        tolerances: format -> the :class:`~asinfer.engine.Tolerance` to judge
            it by instead of the format table's (see :func:`parse_tolerances`);
            the limits applied are in each record's verdict and ``settings``.
        threads: CPU threads of the runtimes that measure parity; default all cores.
        progress: called with a short line at every step.

    Returns:
        A :class:`ConvertResult`: the manifest written (``out``'s when given,
        else ``run_dir``'s), whose ``parity`` holds a typed
        :class:`~asinfer.engine.ParityRecord` per format, and the formats that failed.

    Raises:
        ValueError: an unknown format name (with the closest valid one),
            ``keras`` (the source, not a target), ``out`` equal to ``run_dir``,
            a tolerance for a format not converted, or malformed run data.
        FileNotFoundError: the run folder or a file it needs is missing.

    Example:
        >>> result = convert(Path("runs/demo"), ["onnx-int8"], out=Path("models/demo"))  # doctest: +SKIP
        >>> result.failed, result.records["onnx-int8"].agreement  # doctest: +SKIP
        ((), 1.0)
    """
    run_dir = Path(run_dir)
    targets = _targets(formats)
    limits = resolve(targets, tolerances)
    say = progress or (lambda line: log.info("%s", line))
    if out is not None and Path(out).resolve() == run_dir.resolve():
        raise ValueError(f"out={out} is the run folder itself; pass a separate bundle folder")
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist; pass the --out folder of asinfer train")
    # Inside the run folder: finished files move into place by rename, and /tmp may be small or in memory.
    with tempfile.TemporaryDirectory(prefix=".asinfer-convert-", dir=run_dir) as tmp:
        job = open_job(run_dir, calibration, limits, threads, say, Path(tmp))
        records = {fmt: _convert_one(job, fmt) for fmt in targets}
        written = _write.record(run_dir, job.manifest, records, Path(tmp))
    failed = tuple(fmt for fmt, rec in records.items() if not rec.passed)
    if out is not None:
        written = _write.ship(written, run_dir, Path(out), failed)
    return ConvertResult(written, Path(out) if out is not None else run_dir, tuple(targets), failed)


def _convert_one(job: Job, fmt: str) -> ParityRecord:
    """Convert ``fmt`` into the job's temporary folder, then measure and judge it."""
    dest = job.tmp / FORMATS[fmt].filename
    job.progress(f"{fmt}: converting")
    settings = CONVERTERS[fmt](job, dest)
    if FORMATS[fmt].runtime == "onnxruntime":  # Grad-CAM outputs; probabilities unchanged (parity measures it)
        settings["explanation"] = add_explanation_outputs(dest)
    record = job.judge(fmt, job.measure(fmt, dest))
    tolerance = job.tolerances[fmt]
    record = replace(record, settings={**settings, "parity_data": job.parity_source, "tolerance": tolerance.limits(),
                                       "tolerance_from": _origin(fmt, tolerance)})
    job.progress(_summary(fmt, dest, record))
    return record


def _origin(fmt: str, tolerance: Tolerance) -> str:
    """Where the tolerance applied came from, for the record."""
    return "format table" if tolerance == FORMATS[fmt].tolerance else "tolerances option"


def _summary(fmt: str, dest: Path, record: ParityRecord) -> str:
    """The progress line after a format is judged."""
    dauc = "n/a" if record.dauc is None else f"{record.dauc:+.4f}"
    verdict = "passes" if record.passed else "FAILS"
    return (f"{fmt}: {dest.stat().st_size / 1e6:.1f} MB, max|dp| {record.max_abs_dp:.2e}, agreement "
            f"{record.agreement:.4f}, dAUC {dauc} on {record.n} slices: {verdict}")


def _targets(formats: Sequence[str] | None) -> list[str]:
    """Validated target names in the order given, without repeats."""
    if formats is None:
        return [name for name in FORMATS if name in CONVERTERS]
    if isinstance(formats, str):
        formats = [formats]
    for name in formats:
        get_format(name)  # ValueError with the valid names and a close match
        if name not in CONVERTERS:
            raise ValueError(f"format {name!r} is the conversion source, not a target; choose from "
                             f"{', '.join(CONVERTERS)}")
    return list(dict.fromkeys(formats))
