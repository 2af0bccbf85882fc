"""One conversion run: the run folder read once, the Keras reference, the parity slices and the judge."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from asinfer.engine import FORMATS, Manifest, Tolerance
from asinfer.engine.bundle import MANIFEST_NAME, ParityRecord, check_artifact, measure_parity, read_manifest
from asinfer.trainer.runtimes import load_runner, predict_all

BATCH = 32  # slices per inference call during parity and calibration
MAX_CALIBRATION = 512  # slices drawn from a calibration dataset; a few hundred suffice for MinMax
# Where parity is measured, first found wins: parity.npz holds every slice calibration did not use
# (at most 1,000); runs written before it existed only have the test split.
PARITY_FILES = ("parity.npz", "holdout.npz")


@dataclass
class Job:
    """A run folder opened for conversion: reference model, parity slices, tolerances, shared intermediates."""

    run_dir: Path
    manifest: Manifest
    calibration_source: Path | None
    tolerances: dict[str, Tolerance]  # format -> the tolerance that judges it
    threads: int | None  # for every runtime's runner; None: all cores
    progress: Callable[[str], None]
    tmp: Path  # inside the run folder: finished files move into it by rename
    model: object = None  # keras.Model, loaded once
    parity_source: str = ""  # the file the parity slices came from
    images: np.ndarray = field(default=None, repr=False)  # uint8 [N,H,W,1] parity slices
    labels: np.ndarray = field(default=None, repr=False)
    reference: np.ndarray = field(default=None, repr=False)  # Keras probabilities on ``images``

    @property
    def size(self) -> tuple[int, int]:
        return self.manifest.input.height, self.manifest.input.width

    @functools.cached_property
    def onnx_fp32(self) -> Path:
        """The tf2onnx export, made once and shared by the ONNX formats."""
        from ._onnx import export_onnx

        return export_onnx(self.model, self.size, self.tmp / "export.onnx")

    @functools.cached_property
    def calibration(self) -> np.ndarray:
        """uint8 [M,H,W,1] calibration slices (preprocessed by the engine)."""
        images = calibration_images(self.run_dir, self.calibration_source, self.manifest)
        self.progress(f"calibration: {len(images)} slices")
        return images

    def measure(self, fmt: str, path: Path) -> ParityRecord:
        """Parity of the file ``path`` run by ``fmt``'s runtime runner against Keras (not yet judged)."""
        runner = load_runner(FORMATS[fmt].runtime, path, self.threads)
        probs = predict_all(runner, self.images, BATCH)
        return measure_parity(self.reference, probs, self.labels, self.manifest.threshold)

    def judge(self, fmt: str, record: ParityRecord) -> ParityRecord:
        """``record`` with the verdict of ``fmt``'s tolerance."""
        return replace(record, verdict=self.tolerances[fmt].judge(record))


def open_job(run_dir: Path, calibration: Path | None, tolerances: dict[str, Tolerance], threads: int | None,
             progress: Callable[[str], None], tmp: Path) -> Job:
    """Read the run folder: manifest, verified Keras model, parity slices and Keras's predictions on them.

    Raises:
        FileNotFoundError: a file the run folder needs is missing.
        ValueError: the Keras model does not match its manifest's sha256, or the data are malformed.
    """
    manifest = read_manifest(need(run_dir, MANIFEST_NAME))
    job = Job(run_dir, manifest, Path(calibration) if calibration is not None else None, tolerances, threads,
              progress, tmp)
    path = _keras_file(run_dir, manifest)
    job.images, job.labels, job.parity_source = parity_data(run_dir)
    progress(f"keras: loading {path.name}; parity on {len(job.images)} slices of {job.parity_source}")
    runner = load_runner("keras", path, threads)
    job.model = runner.model  # the runner's model is the conversion source too: loaded once
    job.reference = predict_all(runner, job.images, BATCH)
    return job


def _keras_file(run_dir: Path, manifest: Manifest) -> Path:
    """The run's Keras model, checked against the sha256 its manifest recorded."""
    source = manifest.artifact("keras")
    if source is None:
        raise FileNotFoundError(f"{run_dir / MANIFEST_NAME} lists no 'keras' artifact; convert a training run "
                                f"folder (asinfer train ... --out RUN_DIR)")
    path = need(run_dir, source.file)
    check = check_artifact(run_dir, source)
    if not check.ok:
        raise ValueError(f"{check.message}: the model changed after training; retrain or restore it")
    return path


def need(run_dir: Path, name: str) -> Path:
    """``run_dir/name``, which must exist."""
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; a run folder holds manifest.json, model.keras, parity.npz "
                                f"(or holdout.npz) and calibration.npz as `asinfer train` writes them")
    return path


def parity_data(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """The labelled slices parity is measured on: ``(images, labels, file name)``.

    Conversion fidelity needs slices the quantiser did not calibrate on, not
    held-out patients: ``parity.npz`` (see :data:`PARITY_FILES`) gives up to
    1,000 of them, where the test split alone may be a few dozen.
    """
    name = next((n for n in PARITY_FILES if (run_dir / n).is_file()), PARITY_FILES[0])
    with np.load(need(run_dir, name)) as data:
        images, labels = checked_images(data, name), np.asarray(data["labels"])
    if labels.shape != (len(images),):
        raise ValueError(f"{run_dir / name}: {labels.size} labels for {len(images)} images")
    return images, labels, name


def checked_images(data, origin: str) -> np.ndarray:
    """``data["images"]``, which must be a non-empty uint8 [N,H,W,1] batch."""
    images = np.asarray(data["images"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 1 or not len(images):
        raise ValueError(f"{origin}: 'images' must be a non-empty uint8 [N,H,W,1] batch, got "
                         f"{images.dtype} {images.shape}")
    return images


def calibration_images(run_dir: Path, source: Path | None, manifest: Manifest) -> np.ndarray:
    """Calibration slices: ``source`` (dataset or .npz) or the run's calibration.npz."""
    if source is None or source.suffix == ".npz":
        path = source or need(run_dir, "calibration.npz")
        with np.load(path) as data:
            return checked_images(data, str(path))
    from asinfer.trainer.data import load_images, read_index

    records = read_index(source)
    if len(records) > MAX_CALIBRATION:  # a seeded draw keeps reruns identical
        pick = np.random.default_rng(0).choice(len(records), MAX_CALIBRATION, replace=False)
        records = [records[i] for i in sorted(pick)]
    images, _, failures = load_images(records, manifest.input.height, manifest.preprocessing)
    if not len(images):
        raise ValueError(f"calibration data {source} gave no readable images ({len(failures)} failed)")
    return images
