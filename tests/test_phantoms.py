"""Tests of the synthetic sacroiliac-joint phantom generator (trainer.phantoms)."""
from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from asinfer.trainer.phantoms import PROFILES, generate_series, meets_asas, write_dataset

SIZE = 128  # small matrices keep the file fast; geometry is in mm so nothing else changes


@pytest.fixture(scope="module")
def series_pair():
    """Ten positive and ten negative small series."""
    pos = [generate_series(s, slices=6, size=SIZE, positive=True) for s in range(10)]
    neg = [generate_series(100 + s, slices=6, size=SIZE, positive=False) for s in range(10)]
    return pos, neg


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("path with spaces") / "png set"
    summary = write_dataset(out, patients=4, slices=3, fmt="png", seed=5, size=SIZE)
    return out, summary


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_series_shape_dtype_and_12_bit(series_pair):
    s = series_pair[0][0]
    assert s.images.shape == (6, SIZE, SIZE) and s.images.dtype == np.uint16
    assert s.images.max() <= 4095 and s.images.max() > 500
    assert s.masks.shape == s.images.shape and s.masks.dtype == bool
    assert len(s.slice_labels) == len(s.lesions) == len(s.slice_positions) == 6
    assert s.pixel_spacing[0] == pytest.approx(s.fov_mm / SIZE)


def test_same_seed_same_series_other_seed_differs():
    a = generate_series(3, slices=2, size=SIZE, positive=True)
    b = generate_series(3, slices=2, size=SIZE, positive=True)
    c = generate_series(4, slices=2, size=SIZE, positive=True)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)


def test_random_matrix_in_range():
    sizes = {generate_series(s, slices=1, positive=False).size for s in range(6)}
    assert all(256 <= n <= 512 for n in sizes) and len(sizes) > 1


def test_positives_meet_asas_and_negatives_never(series_pair):
    pos, neg = series_pair
    for s in pos:
        assert s.label == 1 and meets_asas(s.lesions)
        counts = [len(x) for x in s.lesions]
        assert any(c >= 2 for c in counts) or any(a and b for a, b in zip(counts, counts[1:]))
    for s in neg:
        assert s.label == 0 and not meets_asas(s.lesions)
        assert sum(s.slice_labels) == 0 and not s.masks.any()


def test_slice_truth_matches_masks_and_lesion_records(series_pair):
    for s in series_pair[0]:
        for i, lab in enumerate(s.slice_labels):
            assert lab == int(bool(s.lesions[i])) == int(s.masks[i].any())
            for les in s.lesions[i]:
                assert les.slice_index == i and les.area_px > 0
                assert s.masks[i][int(round(les.center_px[1])), int(round(les.center_px[0]))] or les.area_px < 30


def test_lesions_are_brighter_than_the_marrow_around_them(series_pair):
    for s in series_pair[0]:
        i = s.slice_labels.index(1)
        img = s.images[i].astype(float)
        ring = np.zeros_like(s.masks[i])
        ys, xs = np.nonzero(s.masks[i])
        ring[max(ys.min() - 6, 0):ys.max() + 7, max(xs.min() - 6, 0):xs.max() + 7] = True
        assert img[s.masks[i]].mean() > img[ring & ~s.masks[i]].mean()


def test_meets_asas_rule_cases():
    one = [object()]
    assert meets_asas([[], one + one, []])
    assert meets_asas([[], one, one])
    assert not meets_asas([one, [], one])
    assert not meets_asas([[], [], []])


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_renders(name):
    s = generate_series(1, slices=2, size=SIZE, positive=True, profile=name)
    assert s.profile == name and s.label == 1


def _relative_noise(img: np.ndarray) -> float:
    """Robust noise estimate: MAD of neighbour differences over the bright end."""
    d = np.diff(img.astype(float), axis=1)
    return float(np.median(np.abs(d - np.median(d))) / np.percentile(img, 95))


def test_profiles_shift_the_noise():
    low = [generate_series(s, slices=1, size=SIZE, positive=False, profile="low-field") for s in range(3)]
    high = [generate_series(s, slices=1, size=SIZE, positive=False, profile="high-snr") for s in range(3)]
    assert min(x.acquisition.noise for x in low) > max(x.acquisition.noise for x in high)
    assert np.mean([_relative_noise(x.images[0]) for x in low]) > np.mean([_relative_noise(x.images[0]) for x in high])


@pytest.mark.parametrize("kwargs, match", [
    ({"profile": "lowfield"}, "low-field"),
    ({"slices": 0}, "slices=0"),
    ({"size": 10}, "size=10"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    args = {"slices": 2, "size": SIZE, "positive": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_series(0, **args)


def test_write_dataset_rejects_bad_format(tmp_path):
    with pytest.raises(ValueError, match="png"):
        write_dataset(tmp_path, patients=1, fmt="pgn")
    with pytest.raises(ValueError, match="positive_fraction"):
        write_dataset(tmp_path, patients=1, positive_fraction=1.5)


def test_png_layout_is_what_the_loader_reads(png_dir):
    import cv2

    out, summary = png_dir
    with summary.csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label", "patient_id", "slice_index", "series_label"]
    assert len(rows) == summary.n_slices == 12 and summary.n_positive_series == 2
    assert sum(int(r["label"]) for r in rows) == summary.n_positive_slices
    for r in rows:
        assert "\\" not in r["path"] and r["path"].split("/")[0] == ("positive" if r["label"] == "1" else "negative")
        assert r["patient_id"] in r["path"] and f"_s{int(r['slice_index']):02d}" in r["path"]
        img = cv2.imread(str(out / r["path"]), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == (SIZE, SIZE) and img.max() <= 4095
    assert "SYNTHETIC" in (out / "README.txt").read_text()


def test_png_dataset_is_byte_identical_for_a_seed(png_dir, tmp_path):
    out, _ = png_dir
    calls = []
    write_dataset(tmp_path, patients=4, slices=3, fmt="png", seed=5, size=SIZE,
                  progress=lambda done, total: calls.append((done, total)))
    assert _digest(tmp_path) == _digest(out)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_rerun_with_another_seed_leaves_no_slice_in_both_classes(tmp_path):
    write_dataset(tmp_path, patients=3, slices=3, seed=1, size=SIZE)
    write_dataset(tmp_path, patients=3, slices=3, seed=2, size=SIZE)
    names = [p.name for d in ("negative", "positive") for p in (tmp_path / d).iterdir()]
    assert len(names) == len(set(names)) == 9


def test_patient_is_independent_of_dataset_size(tmp_path):
    a = write_dataset(tmp_path / "a", patients=1, slices=2, seed=9, size=SIZE, positive_fraction=1.0)
    b = write_dataset(tmp_path / "b", patients=3, slices=2, seed=9, size=SIZE, positive_fraction=1.0)
    assert _digest(a.out)["positive/P0000_s00.png" if (a.out / "positive/P0000_s00.png").exists()
                          else "negative/P0000_s00.png"] == _digest(b.out)[
        "positive/P0000_s00.png" if (b.out / "positive/P0000_s00.png").exists() else "negative/P0000_s00.png"]


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom")
    summary = write_dataset(out, patients=2, slices=3, fmt="dicom", seed=11, size=SIZE)
    series = [generate_series(c, slices=3, size=SIZE, positive=bool(p), patient_id=f"P{i:04d}")
              for i, (c, p) in enumerate(zip(np.random.SeedSequence(11).spawn(2), _labels(2, 11)))]
    return out, summary, series


def _labels(n, seed):
    from asinfer.trainer.phantoms import series_labels

    return series_labels(n, 0.5, seed)


def test_dicom_round_trip_through_pydicom(dicom_dir):
    out, summary, series = dicom_dir
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == summary.n_slices == 6
    studies = set()
    for path in files:
        ds = pydicom.dcmread(path)
        pid, idx = ds.PatientID, int(path.stem.split("_s")[1])
        s = next(x for x in series if x.patient_id == pid)
        assert np.array_equal(ds.pixel_array, s.images[idx])
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.Modality == "MR"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.InstanceNumber == idx + 1
        assert str(ds.PatientName) == f"PHANTOM^{pid}" and "SYNTHETIC PHANTOM" in ds.SeriesDescription
        assert float(ds.PixelSpacing[0]) == pytest.approx(s.pixel_spacing[0], rel=1e-5)
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(s.slice_positions[idx])
        assert float(ds.WindowWidth) > 0
        studies.add((pid, ds.StudyInstanceUID, ds.SeriesInstanceUID))
    assert len(studies) == 2  # one study and series per patient


def test_dicom_is_byte_identical_for_a_seed(dicom_dir, tmp_path):
    out, _, _ = dicom_dir
    write_dataset(tmp_path, patients=2, slices=3, fmt="dicom", seed=11, size=SIZE)
    assert _digest(tmp_path) == _digest(out)


def test_dicom_round_trip_through_engine_reader(dicom_dir):
    from asinfer import engine

    out, _, series = dicom_dir
    for path in sorted(out.rglob("*.dcm")):
        frames = engine.read_frames(path)
        s = next(x for x in series if x.patient_id in path.name)
        assert len(frames) == 1
        assert np.array_equal(np.asarray(frames[0].pixels), s.images[int(path.stem.split("_s")[1])])
        assert frames[0].invert is False and frames[0].window is not None


def test_import_pulls_no_tensorflow():
    code = ("import sys, asinfer.trainer.phantoms; "
            "sys.exit(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("use_csv", [True, False])
def test_trainer_loader_reads_the_layout(png_dir, dicom_dir, use_csv, tmp_path):
    from asinfer.trainer import data

    for out, summary in ((png_dir[0], png_dir[1]), (dicom_dir[0], dicom_dir[1])):
        if use_csv:
            records = data.read_index(out)
        else:  # class folders alone, as a user would point at a copy without the CSV
            records = data.read_index(_copy_class_folders(out, tmp_path / out.name))
        assert len(records) == summary.n_slices
        assert sum(r.label for r in records) == summary.n_positive_slices
        for r in records:
            assert r.label == int(Path(r.path).parent.name == "positive")
        if use_csv:
            assert {r.patient_id for r in records} == {f"P{i:04d}" for i in range(summary.n_patients)}


def _copy_class_folders(src: Path, dst: Path) -> Path:
    import shutil

    for name in ("negative", "positive"):
        shutil.copytree(src / name, dst / name)
    return dst
