"""Write phantom datasets in the layout the trainer's loader reads.

    OUT/negative/P0000_s00.png     slices without a lesion
    OUT/positive/P0003_s07.png     slices with an oedema lesion
    OUT/labels.csv                 path,label,patient_id,slice_index,series_label
    OUT/README.txt                 says the data is synthetic
    OUT/dataset.json               the same for programs: {"synthetic": true, "generator": ..., settings}

Labels are per slice; series_label is the ASAS-positive truth of the patient.
"""
from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ._dicom import SYNTHETIC_NOTE, write_dicom_slice
from ._profiles import TRAINING_PROFILE, ScannerProfile, get_profile
from ._series import Series, generate_series
from ._variants import AnatomyVariant, get_anatomy

FORMATS = {"png": ".png", "dicom": ".dcm"}
CSV_HEADER = ("path", "label", "patient_id", "slice_index", "series_label")
CLASS_DIRS = ("negative", "positive")


@dataclass(frozen=True)
class DatasetSummary:
    """What write_dataset wrote."""

    out: Path
    csv_path: Path
    fmt: str
    profile: str
    seed: int
    n_patients: int
    n_slices: int
    n_positive_slices: int
    n_positive_series: int
    anatomy: str | None = None  # the anatomy variant asked for; None: drawn from the training variants


def check_dataset_args(fmt: str, patients: int, slices: int, positive_fraction: float) -> None:
    """ValueError naming the first bad write_dataset argument (shared by both phantom sources)."""
    if fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Invalid fmt={fmt!r}. Valid formats are {tuple(FORMATS)}.{hint}")
    if not isinstance(patients, (int, np.integer)) or patients < 1:
        raise ValueError(f"patients={patients!r} must be a positive integer.")
    if not isinstance(slices, (int, np.integer)) or slices < 1:
        raise ValueError(f"slices={slices!r} must be a positive integer (e.g. 12).")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction={positive_fraction!r} must be between 0 and 1.")


def series_labels(patients: int, positive_fraction: float, seed: int) -> np.ndarray:
    """Exactly round(fraction * patients) positives, in a seeded random order."""
    labels = np.zeros(patients, bool)
    labels[: int(round(positive_fraction * patients))] = True
    return np.random.default_rng([seed, 1]).permutation(labels)


def write_dataset(out: Path | str, *, patients: int, slices: int = 12, fmt: str = "png", seed: int = 0,
                  profile: str | ScannerProfile = TRAINING_PROFILE, positive_fraction: float = 0.5,
                  progress: Callable[[int, int], None] | None = None, size: int | None = None,
                  anatomy: str | AnatomyVariant | None = None, mimic_rate: float = 1.0,
                  lesion_range: str = "wide", render_variety: float = 0.0,
                  lesion_variety: float = 0.0) -> DatasetSummary:
    """Write a synthetic phantom dataset: one folder per slice class plus labels.csv.

    Args:
        out: output folder (created; existing files of the same names are overwritten).
        patients: number of virtual patients (one series each).
        slices: slices per series.
        fmt: "png" (8-bit or 16-bit grey PNG of the stored values, display
            polarity) or "dicom" (MR series, honouring bit depth, window and
            MONOCHROME1).
        seed: the same seed gives byte-identical files.
        profile: scanner profile name (see PROFILES) or a ScannerProfile;
            ``mixed`` is the training distribution, ``vendor-b`` the held-out profile.
        positive_fraction: share of ASAS-positive series, rounded to whole patients.
        progress: optional callable(done, total) called after each patient.
        size: matrix per series; None draws one per patient from the profile.
        anatomy: anatomy variant name (see ANATOMIES); None draws a training
            variant per patient. ``write_dataset(out, patients=40, **HELD_OUT)``
            writes the held-out test set.
        mimic_rate: scales every mimic's probability (0: none; see generate_series).
        lesion_range: lesion sizes and brightness (``wide``, or ``large`` for a warm-up; see generate_series).
        render_variety: probability of each other way of rendering normal tissue (see generate_series).
        lesion_variety: probability of another way of drawing each lesion (see generate_series).

    Returns:
        A DatasetSummary with paths and counts.

    Raises:
        ValueError: bad fmt, profile, anatomy, counts or fraction.

    Example:
        >>> s = write_dataset("/tmp/phantoms", patients=2, slices=3, size=128)
        >>> s.n_slices
        6
    """
    check_dataset_args(fmt, patients, slices, positive_fraction)
    prof = get_profile(profile)
    variant = None if anatomy is None else get_anatomy(anatomy)
    anatomy_name = None if variant is None else variant.name
    out = Path(out)
    for name in CLASS_DIRS:
        (out / name).mkdir(parents=True, exist_ok=True)
    labels = series_labels(patients, positive_fraction, seed)
    children = np.random.SeedSequence(seed).spawn(patients)  # patient i is independent of the total
    rows, pos_slices = [], 0
    for i, (child, positive) in enumerate(zip(children, labels)):
        series = generate_series(child, slices=slices, size=size, positive=bool(positive), profile=prof,
                                 patient_id=f"P{i:04d}", anatomy=variant,
                                 mimic_rate=mimic_rate, lesion_range=lesion_range, render_variety=render_variety,
                                 lesion_variety=lesion_variety)
        rows += _write_series(out, series, fmt, seed)
        pos_slices += sum(series.slice_labels)
        if progress is not None:
            progress(i + 1, patients)
    csv_path = _write_csv(out, rows)
    _write_readme(out, fmt, seed, prof.name, anatomy_name)
    _write_info(out, fmt=fmt, seed=seed, profile=prof.name, anatomy=anatomy_name, patients=patients, slices=slices,
                positive_fraction=positive_fraction, size=size, mimic_rate=mimic_rate, lesion_range=lesion_range,
                render_variety=render_variety, lesion_variety=lesion_variety)
    return DatasetSummary(out, csv_path, fmt, prof.name, seed, patients, len(rows), pos_slices, int(labels.sum()),
                          anatomy_name)


def _write_series(out: Path, series: Series, fmt: str, seed: int) -> list[tuple]:
    rows = []
    for i, lab in enumerate(series.slice_labels):
        name = f"{series.patient_id}_s{i:02d}{FORMATS[fmt]}"
        rel = f"{CLASS_DIRS[lab]}/{name}"
        # A rerun into the same folder must not leave this slice in both classes.
        (out / CLASS_DIRS[1 - lab] / name).unlink(missing_ok=True)
        if fmt == "png":
            # PNG has no photometric interpretation: it holds the display polarity, 8 or 16 bits as stored.
            if not cv2.imwrite(str(out / rel), series.images[i]):
                raise OSError(f"could not write {out / rel}")
        else:
            write_dicom_slice(out / rel, series, i, seed=seed)
        rows.append((rel, lab, series.patient_id, i, series.label))
    return rows


def _write_csv(out: Path, rows: list[tuple]) -> Path:
    path = out / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    return path


def _write_info(out: Path, **settings) -> None:
    """dataset.json: what the trainer reads to mark a model as trained on synthetic data."""
    info = {"synthetic": True, "generator": "asinfer.trainer.phantoms", "note": SYNTHETIC_NOTE, **settings}
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _write_readme(out: Path, fmt: str, seed: int, profile: str, anatomy: str | None) -> None:
    (out / "README.txt").write_text(
        f"{SYNTHETIC_NOTE}.\n\n"
        "Synthetic STIR-like MRI phantoms of the sacroiliac joints, made by asinfer's trainer.phantoms.\n"
        "No real patient is depicted. Nothing trained or tested on these images is a diagnostic device.\n\n"
        f"format={fmt} seed={seed} profile={profile} anatomy={anatomy or 'training variants'}\n"
        "negative/, positive/: slices by slice truth (subchondral oedema lesion on the slice).\n"
        "labels.csv: path,label,patient_id,slice_index,series_label (series_label: ASAS rule met).\n",
        encoding="utf-8",
    )
