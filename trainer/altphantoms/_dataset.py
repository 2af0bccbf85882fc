"""Write an independent test set in the training generator's layout.

    OUT/negative/IND0000_s00.png   slices without a lesion (.dcm for fmt="dicom")
    OUT/positive/IND0003_s07.png   slices with an oedema lesion
    OUT/labels.csv                 path,label,patient_id,slice_index,series_label
    OUT/README.txt                 SYNTHETIC PHANTOM - independent test source - not patient data
    OUT/dataset.json               {"synthetic": true, "test_only": true, "generator": ..., settings}

Patient ids start with "IND", and DICOM UIDs are name-based in a namespace of
this source, so nothing collides with a training set written with the same seed.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from asinfer.trainer.phantoms import DatasetSummary, Series, check_dataset_args, series_labels

from ._dicom import NOTE, write_dicom_slice
from ._generate import PROFILE, generate_series

TEST_ONLY = "FOR TESTING ONLY - never use these images to train or tune a model"
FORMATS = {"png": ".png", "dicom": ".dcm"}
CSV_HEADER = ("path", "label", "patient_id", "slice_index", "series_label")
CLASS_DIRS = ("negative", "positive")
_SOURCE_TAG = 0x5A17  # mixed into the seed: the same seed draws other patients than the training source


def write_slice_file(path: Path, series: Series, i: int, fmt: str, *, seed: int) -> None:
    """Write slice i of a series as a 16-bit PNG (the 12-bit values) or a DICOM MR file."""
    if fmt == "png":
        if not cv2.imwrite(str(path), series.images[i]):
            raise OSError(f"could not write {path}")
    else:
        write_dicom_slice(path, series, i, seed=seed)


def write_dataset(out: Path | str, *, patients: int, slices: int = 12, fmt: str = "png", seed: int = 0,
                  positive_fraction: float = 0.5, size: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> DatasetSummary:
    """Write an independent TEST set: one folder per slice class plus labels.csv. Never train on it.

    Args:
        out: output folder (created; files of the same names are overwritten).
        patients: virtual patients (one series each).
        slices: slices per series.
        fmt: "png" (16-bit grey PNG of the 12-bit values) or "dicom" (an MR series per patient).
        seed: the same seed gives byte-identical files; patient i depends only on (seed, i).
        positive_fraction: share of ASAS-positive series, rounded to whole patients.
        size: matrix per series; None draws 192..512 per patient.
        progress: optional callable(done, total) after each patient.

    Returns:
        The training package's DatasetSummary, with profile "independent".

    Raises:
        ValueError: bad fmt, counts or fraction.

    Example:
        >>> s = write_dataset("/tmp/independent", patients=2, slices=3, size=128)  # doctest: +SKIP
        >>> s.n_slices, s.profile  # doctest: +SKIP
        (6, 'independent')
    """
    check_dataset_args(fmt, patients, slices, positive_fraction)
    out = Path(out)
    for name in CLASS_DIRS:
        (out / name).mkdir(parents=True, exist_ok=True)
    labels = series_labels(patients, positive_fraction, seed)
    children = np.random.SeedSequence([seed, _SOURCE_TAG]).spawn(patients)
    rows, pos_slices = [], 0
    for i, (child, positive) in enumerate(zip(children, labels)):
        series = generate_series(child, slices=slices, size=size, positive=bool(positive), patient_id=f"IND{i:04d}")
        rows += _write_series(out, series, fmt, seed)
        pos_slices += sum(series.slice_labels)
        if progress is not None:
            progress(i + 1, patients)
    csv_path = out / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    _write_notes(out, fmt=fmt, seed=seed, patients=patients, slices=slices, positive_fraction=positive_fraction,
                 size=size)
    return DatasetSummary(out, csv_path, fmt, PROFILE, seed, patients, len(rows), pos_slices, int(labels.sum()))


def _write_series(out: Path, series: Series, fmt: str, seed: int) -> list[tuple]:
    rows = []
    for i, lab in enumerate(series.slice_labels):
        name = f"{series.patient_id}_s{i:02d}{FORMATS[fmt]}"
        rel = f"{CLASS_DIRS[lab]}/{name}"
        (out / CLASS_DIRS[1 - lab] / name).unlink(missing_ok=True)  # a rerun must not leave it in both classes
        write_slice_file(out / rel, series, i, fmt, seed=seed)
        rows.append((rel, lab, series.patient_id, i, series.label))
    return rows


def _write_notes(out: Path, **settings) -> None:
    info = {"synthetic": True, "test_only": True, "generator": "asinfer.trainer.altphantoms", "note": NOTE,
            "use": TEST_ONLY, **settings}
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(
        f"{NOTE}.\n{TEST_ONLY}.\n\n"
        "Synthetic STIR-like MRI phantoms of the sacroiliac joints drawn by asinfer's trainer.altphantoms,\n"
        "code written independently of the training generator (trainer.phantoms), to check that a model\n"
        "learned the lesion and not one generator. No real patient is depicted; nothing measured on\n"
        "these images has diagnostic validity.\n\n"
        f"format={settings['fmt']} seed={settings['seed']} source=independent\n"
        "negative/, positive/: slices by slice truth (subchondral oedema lesion on the slice).\n"
        "labels.csv: path,label,patient_id,slice_index,series_label (series_label: ASAS rule met).\n",
        encoding="utf-8",
    )
