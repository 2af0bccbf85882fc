"""The labelled images ``asinfer bench`` measures accuracy on, and the image files its pipeline rows read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

DATA_SEED = 9001  # phantom test set: a seed no training recipe uses
PHANTOMS = {False: {"patients": 16, "slices": 12, "size": None}, True: {"patients": 8, "slices": 6, "size": 128}}


@dataclass(frozen=True)
class BenchData:
    """Preprocessed images with labels (accuracy, speed) and image files (pipeline rows)."""

    images: np.ndarray  # uint8 [N, H, W, 1], the model's input
    labels: np.ndarray  # 0/1 per image
    files: tuple[Path, ...]
    description: str


def load_data(data: Path | None, quick: bool, manifest, workdir: Path, say: Callable[[str], None]) -> BenchData:
    """Read ``data`` (a dataset folder or CSV, an ``.npz`` of preprocessed images, or None for phantoms).

    A dataset is read and preprocessed by the engine and its files feed the
    pipeline rows; an ``.npz`` (e.g. a run's holdout.npz) gives the images,
    and the pipeline rows then read a small phantom set written to ``workdir``.

    Raises:
        FileNotFoundError, ValueError: unusable ``data``.
    """
    size = (manifest.input.height, manifest.input.width)
    if data is not None and data.suffix == ".npz":
        images, labels = _npz(data, size)
        files, desc = _phantoms(True, workdir / "phantoms", say)
        return BenchData(images, labels, files, f"{data}: {len(images)} preprocessed images, "
                         f"{int(labels.sum())} positive; pipeline rows: {desc}")
    if data is None:
        source = workdir / "phantoms"
        _, desc = _phantoms(quick, source, say)
    else:
        source, desc = data, str(data)
    images, labels, files, failures = _read(source, manifest)
    if not len(images):
        raise ValueError(f"data {data} gave no readable images ({len(failures)} failed, e.g. "
                         f"{failures[:1]}); pass a dataset folder, CSV, or .npz")
    desc += f": {len(images)} images, {int(labels.sum())} positive" + (f", {len(failures)} unreadable" if failures else "")
    return BenchData(images, labels, files, desc)


def _read(source: Path, manifest) -> tuple[np.ndarray, np.ndarray, tuple[Path, ...], list[str]]:
    """A dataset through the engine's read-and-preprocess path: (images, labels, files, failures)."""
    from asinfer.trainer.data import load_images, read_index

    records = read_index(source)
    images, labels, failures = load_images(records, manifest.input.height, manifest.preprocessing)
    return images, labels, tuple(r.path for r in records), failures


def _phantoms(quick: bool, folder: Path, say: Callable[[str], None]) -> tuple[tuple[Path, ...], str]:
    """A deterministic phantom DICOM test set written into ``folder``: (files, description)."""
    from asinfer.trainer.phantoms import write_dataset

    shape = PHANTOMS[quick]
    say(f"data: writing {shape['patients']}x{shape['slices']} phantom DICOM slices (seed {DATA_SEED})")
    write_dataset(folder, fmt="dicom", seed=DATA_SEED, **shape)
    desc = (f"synthetic phantom DICOM test set (seed {DATA_SEED}, {shape['patients']} patients x {shape['slices']} "
            f"slices, matrix {shape['size'] or '256-512'})")
    return tuple(sorted(folder.rglob("*.dcm"))), desc


def _npz(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed ``images`` uint8 [N,H,W,1] and ``labels`` from an .npz (e.g. a run's holdout.npz)."""
    with np.load(path) as data:
        if "images" not in data or "labels" not in data:
            raise ValueError(f"{path} must hold 'images' (uint8 [N,H,W,1]) and 'labels', has {sorted(data.files)}")
        images, labels = np.asarray(data["images"]), np.asarray(data["labels"])
    if (images.dtype != np.uint8 or images.shape[1:] != (*size, 1) or len(images) != len(labels)
            or not len(images)):
        raise ValueError(f"{path}: images must be a non-empty uint8 [N,{size[0]},{size[1]},1] batch (the model's "
                         f"input) with one label each, got {images.dtype} {images.shape} and {labels.shape} labels")
    return images, labels
