"""Datasets for training: index a folder or CSV, split by patient, preprocess once with the engine.

Layouts read:
  * a CSV with columns ``path,label[,patient_id,...]`` (paths relative to the
    CSV's folder; labels 0/1 or class names), e.g. the ``labels.csv`` that
    ``asinfer synth`` writes; a folder holding ``labels.csv`` uses it;
  * one sub-folder per class (``negative/`` and ``positive/``, or other
    recognised names), files anywhere below, DICOM found by content.

A ``dataset.json`` beside the data (``asinfer synth`` writes one) describes
it; ``{"synthetic": true}`` marks phantoms, and every model trained on them
says so in its manifest and card.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asinfer.engine import Preprocessor, PreprocessSpec, iter_files, load_slices

log = logging.getLogger("asinfer.trainer")

DATASET_INFO = "dataset.json"

POSITIVE_NAMES = {"1", "positive", "pos", "as", "axspa", "sacroiliitis", "yes", "true", "abnormal"}
NEGATIVE_NAMES = {"0", "negative", "neg", "no_as", "no-as", "noas", "normal", "no", "false", "healthy"}


@dataclass(frozen=True)
class Record:
    """One labelled file; ``patient_id`` groups slices that must stay in one split (and form one series).

    ``slice_index`` orders a patient's slices and ``series_label`` is the
    series truth (for phantoms: the ASAS rule met) when the CSV has them.
    """

    path: Path
    label: int
    patient_id: str
    slice_index: int | None = None
    series_label: int | None = None


@dataclass
class Split:
    """Record indices per split, and how they were made."""

    train: list[int]
    val: list[int]
    test: list[int]
    by_patient: bool
    info: dict = field(default_factory=dict)


def parse_label(value: str) -> int:
    """0 or 1 from a CSV cell or class folder name.

    Raises:
        ValueError: the name is not one we recognise; lists the valid ones.
    """
    key = str(value).strip().lower()
    if key in POSITIVE_NAMES:
        return 1
    if key in NEGATIVE_NAMES:
        return 0
    raise ValueError(f"label {value!r} is not recognised; positive: {sorted(POSITIVE_NAMES)}, "
                     f"negative: {sorted(NEGATIVE_NAMES)}")


def read_index(source: Path) -> list[Record]:
    """Records of a dataset: a CSV file, a folder with ``labels.csv``, or class folders.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: no usable layout, unknown labels, or missing columns.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"dataset {source} does not exist")
    if source.is_file():
        return _read_csv(source)
    if (source / "labels.csv").is_file():
        return _read_csv(source / "labels.csv")
    return _read_class_folders(source)


def read_dataset_info(source: Path) -> dict:
    """The ``dataset.json`` of a dataset folder (or of a CSV's folder); empty when there is none.

    Raises:
        ValueError: the file exists but is not a JSON object.
    """
    source = Path(source)
    path = (source if source.is_dir() else source.parent) / DATASET_INFO
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(info).__name__}")
    return info


def _read_csv(path: Path) -> list[Record]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; need path,label[,patient_id]")
        rows = list(reader)
    has_patients = all(r.get("patient_id") for r in rows)
    if not has_patients:
        log.warning("%s has no patient_id column: splitting by slice, which leaks between splits", path)
    return [Record(path.parent / r["path"], parse_label(r["label"]), r["patient_id"] if has_patients else f"slice-{i}",
                   _whole(r.get("slice_index")), parse_label(r["series_label"]) if r.get("series_label") else None)
            for i, r in enumerate(rows)]


def _whole(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _read_class_folders(root: Path) -> list[Record]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) != 2:
        raise ValueError(f"{root}: expected labels.csv or two class folders (e.g. negative/, positive/), "
                         f"found {[d.name for d in classes]}")
    records = []
    for folder in classes:
        label = parse_label(folder.name)
        records += [Record(p, label, f"slice-{p}") for p in iter_files(folder)]
    log.warning("%s: class folders carry no patient ids: splitting by slice", root)
    return records


def split_by_patient(records: list[Record], val: float = 0.15, test: float = 0.15, seed: int = 0) -> Split:
    """Patient-wise split, stratified by patient label (positive if any slice is).

    Slices of one patient never straddle two splits.
    """
    patients: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        patients.setdefault(r.patient_id, []).append(i)
    rng = np.random.default_rng(seed)
    out = {"train": [], "val": [], "test": []}
    for label in (0, 1):
        ids = sorted(p for p, idx in patients.items() if max(records[i].label for i in idx) == label)
        rng.shuffle(ids)
        n_test, n_val = round(len(ids) * test), round(len(ids) * val)
        groups = {"test": ids[:n_test], "val": ids[n_test:n_test + n_val], "train": ids[n_test + n_val:]}
        for name, members in groups.items():
            out[name] += [i for p in members for i in patients[p]]
    by_patient = not all(p.startswith("slice-") for p in patients)
    info = {name: {"slices": len(idx), "patients": len({records[i].patient_id for i in idx}),
                   "positive_slices": int(sum(records[i].label for i in idx))} for name, idx in out.items()}
    return Split(sorted(out["train"]), sorted(out["val"]), sorted(out["test"]), by_patient, info)


@dataclass(frozen=True)
class Loaded:
    """Preprocessed slices of a list of records: ``index[k]`` is the record image ``k`` came from."""

    images: np.ndarray  # uint8 [N, size, size, 1]
    labels: np.ndarray  # int8 [N]
    index: np.ndarray  # int [N]
    failures: list[str]


def load_images(records: list[Record], size: int, spec: PreprocessSpec = PreprocessSpec(),
                cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Preprocess every record once with the engine's read-and-preprocess path (``load_slices``).

    Returns:
        ``(images uint8 [N, size, size, 1], labels int [N], failures)``; multi-frame
        files contribute one image per frame; slices that cannot be read are
        left out and listed in ``failures`` as ``"path (frame F): reason: message"``.
        :func:`load_indexed` also says which record each image came from.
    """
    loaded = load_indexed(records, size, spec, cache_dir)
    return loaded.images, loaded.labels, loaded.failures


def load_indexed(records: list[Record], size: int, spec: PreprocessSpec = PreprocessSpec(),
                 cache_dir: Path | None = None) -> Loaded:
    """:func:`load_images`, with the record of each image (series fitting needs the patient and slice order)."""
    key = _cache_key(records, size, spec)
    cached = Path(cache_dir) / f"preprocessed-{key}.npz" if cache_dir else None
    if cached and cached.exists():
        with np.load(cached, allow_pickle=False) as data:
            return Loaded(data["images"], data["labels"], data["index"], list(data["failures"]))
    images, index, failures = [], [], []
    for s in load_slices([r.path for r in records], Preprocessor(spec, (size, size))):
        if s.ok:
            images.append(s.image)
            index.append(s.input_index)
        else:
            where = s.source if s.frame is None else f"{s.source} (frame {s.frame})"
            failures.append(f"{where}: {s.reason}: {s.message}")
    batch = np.stack(images)[..., None] if images else np.zeros((0, size, size, 1), np.uint8)
    loaded = Loaded(batch, np.array([records[i].label for i in index], np.int8), np.array(index, np.int64), failures)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, images=loaded.images, labels=loaded.labels, index=loaded.index,
                 failures=np.array(failures, dtype=str))
    return loaded


def _cache_key(records: list[Record], size: int, spec: PreprocessSpec) -> str:
    h = hashlib.sha256(json.dumps(["v2: with index", size, repr(spec)]).encode())
    for r in records:
        stat = r.path.stat() if r.path.exists() else None
        h.update(f"{r.path}|{r.label}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
    return h.hexdigest()[:16]
