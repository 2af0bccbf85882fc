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

from asinfer.trainer.phantoms import (
    ANATOMIES,
    HELD_OUT,
    PROFILES,
    TRAINING_ANATOMIES,
    generate_series,
    meets_asas,
    write_dataset,
)

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


def test_series_shape_dtype_and_12_bit():
    s = generate_series(0, slices=6, size=SIZE, positive=True, profile="default")  # the classic preset
    assert s.images.shape == (6, SIZE, SIZE) and s.images.dtype == np.uint16
    assert s.images.max() <= 4095 and s.images.max() > 500
    assert (s.bits_stored, s.photometric) == (12, "MONOCHROME2") and s.window is not None
    assert s.masks.shape == s.images.shape and s.masks.dtype == bool
    assert len(s.slice_labels) == len(s.lesions) == len(s.slice_positions) == 6
    assert s.pixel_spacing[0] == pytest.approx(s.fov_mm / SIZE)


def test_same_seed_same_series_other_seed_differs():
    a = generate_series(3, slices=2, size=SIZE, positive=True)
    b = generate_series(3, slices=2, size=SIZE, positive=True)
    c = generate_series(4, slices=2, size=SIZE, positive=True)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert (a.anatomy, a.bits_stored, a.photometric, a.window) == (b.anatomy, b.bits_stored, b.photometric, b.window)
    assert not np.array_equal(a.images, c.images)


def test_random_matrix_in_range():
    mixed = {generate_series(s, slices=1, positive=False).size for s in range(12)}
    assert all(192 <= n <= 640 and n % 32 == 0 for n in mixed) and len(mixed) > 3
    preset = {generate_series(s, slices=1, positive=False, profile="default").size for s in range(6)}
    assert all(256 <= n <= 512 for n in preset) and len(preset) > 1


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
    assert s.profile == name and s.label == 1 and meets_asas(s.lesions)


@pytest.mark.parametrize("name", sorted(ANATOMIES))
def test_every_anatomy_variant_renders_with_exact_truth(name):
    for seed in range(2):
        pos = generate_series(seed, slices=3, size=SIZE, positive=True, anatomy=name)
        neg = generate_series(seed, slices=3, size=SIZE, positive=False, anatomy=name)
        assert pos.anatomy == neg.anatomy == name
        assert pos.label == 1 and meets_asas(pos.lesions) and neg.label == 0 and not neg.masks.any()
        assert [int(m.any()) for m in pos.masks] == pos.slice_labels


def test_anatomy_variants_draw_their_own_shapes():
    for name, variant in ANATOMIES.items():
        for seed in range(3):
            g = generate_series(seed, slices=1, size=64, positive=False, anatomy=name).geometry
            assert variant.fat_mm[0] <= g.fat_mm <= variant.fat_mm[1]
            assert variant.body_a[0] <= g.body_a <= variant.body_a[1]
            assert variant.sacrum_w[0] <= g.sacrum_w <= variant.sacrum_w[1]
    thin, obese = ANATOMIES["thin"], ANATOMIES["obese"]
    assert thin.fat_mm[1] < obese.fat_mm[0]  # the regimes differ, not only their names


def test_asymmetries_are_random_in_sign():
    geometries = [generate_series(s, slices=1, size=64, positive=False).geometry for s in range(60)]
    wider = [g.joint_gap[1] > g.joint_gap[-1] for g in geometries]
    longer = [g.wing_span[1] > g.wing_span[-1] for g in geometries]
    for flags in (wider, longer, [g.asym > 0 for g in geometries], [g.body_dx > 0 for g in geometries]):
        assert 15 <= sum(flags) <= 45


def test_training_distribution_never_draws_the_held_out_settings():
    held_profile, held_anatomy = PROFILES[HELD_OUT["profile"]], ANATOMIES[HELD_OUT["anatomy"]]
    assert held_profile.held_out and held_anatomy.held_out and HELD_OUT["anatomy"] not in TRAINING_ANATOMIES
    drawn = [generate_series(s, slices=1, size=64, positive=bool(s % 2)) for s in range(60)]
    assert {x.profile for x in drawn} == {"mixed"}
    assert {x.anatomy for x in drawn} == set(TRAINING_ANATOMIES)  # every training variant, never the held-out one
    # The held-out profile lies outside the training ranges: weaker fat suppression, brighter response.
    mixed = PROFILES["mixed"]
    assert mixed.fat_residual[1] < held_profile.fat_residual[0] and mixed.gamma[0] > held_profile.gamma[1]
    assert max(x.acquisition.fat_residual for x in drawn) < held_profile.fat_residual[0]
    held = generate_series(0, slices=2, size=64, positive=True, **HELD_OUT)
    assert (held.profile, held.anatomy) == (HELD_OUT["profile"], HELD_OUT["anatomy"]) and held.label == 1


def test_training_distribution_draws_every_storage_and_polarity():
    drawn = [generate_series(s, slices=1, size=64, positive=False) for s in range(80)]
    assert {x.bits_stored for x in drawn} == {8, 12, 16}
    assert {x.images.dtype for x in drawn} == {np.dtype(np.uint8), np.dtype(np.uint16)}
    assert {x.window is None for x in drawn} == {True, False}
    assert "MONOCHROME1" in {x.photometric for x in drawn}
    assert {x.acquisition.storage.export8 for x in drawn if x.bits_stored == 8} == {"full", "shift"}
    fields = [x.field_strength_t for x in drawn]
    assert min(fields) < 0.5 and max(fields) > 2.0 and len(set(fields)) > 40  # continuous, 0.25-3 T


def test_lesions_fall_on_both_sides_equally():
    sides = {"R": 0, "L": 0}
    for seed in range(80):
        s = generate_series(1000 + seed, slices=4, size=64, positive=True)
        for side in {(les.lesion_id, les.side) for slice_lesions in s.lesions for les in slice_lesions}:
            sides[side[1]] += 1
    total = sides["R"] + sides["L"]
    assert total > 120 and abs(sides["R"] - sides["L"]) / total < 0.2, sides


def test_mimics_come_with_the_same_probabilities_in_both_classes():
    chronic = {"erosion", "fat"}  # signs of sacroiliitis that go with lesions (fat also occurs as a mimic)

    def rates(positive: bool) -> dict[str, float]:
        counts: dict[str, int] = {}
        for seed in range(70):
            s = generate_series(2000 + seed, slices=4, size=64, positive=positive)
            for kind in {k for f in s.findings for k in f} - chronic:
                counts[kind] = counts.get(kind, 0) + 1
        return {k: v / 70 for k, v in counts.items()}

    pos, neg = rates(True), rates(False)
    assert {"vessel", "deep-focus", "joint-fluid", "soft-oedema", "bowel-contact"} <= set(neg)
    for kind in set(pos) | set(neg):
        assert abs(pos.get(kind, 0) - neg.get(kind, 0)) < 0.25, (kind, pos.get(kind), neg.get(kind))


def test_mimic_rate_scales_the_mimics_and_leaves_everything_else():
    same = generate_series(11, slices=4, size=96, positive=True, mimic_rate=1.0)
    np.testing.assert_array_equal(same.images, generate_series(11, slices=4, size=96, positive=True).images)
    chronic = {"erosion", "fat"}
    none = [generate_series(300 + k, slices=6, size=64, positive=bool(k % 2), mimic_rate=0.0) for k in range(12)]
    assert all(set(kinds) <= chronic for s in none for kinds in s.findings)
    assert all(s.label == k % 2 for k, s in enumerate(none))  # the lesion truth does not depend on it
    with pytest.raises(ValueError, match="mimic_rate"):
        generate_series(1, slices=2, size=64, positive=False, mimic_rate=1.5)


def test_lesion_range_large_draws_only_large_bright_lesions_and_keeps_the_truth():
    def lesion_area(lesion_range: str) -> float:
        series = [generate_series(400 + k, slices=6, size=128, positive=True, lesion_range=lesion_range)
                  for k in range(8)]
        assert all(s.label == 1 for s in series)
        return float(np.mean([m.mean() for s in series for m in s.masks if m.any()]))

    wide = generate_series(11, slices=4, size=96, positive=True, lesion_range="wide")
    np.testing.assert_array_equal(wide.images, generate_series(11, slices=4, size=96, positive=True).images)
    assert lesion_area("large") > 1.3 * lesion_area("wide")  # 1.5x on these seeds
    with pytest.raises(ValueError, match="lesion_range"):
        generate_series(1, slices=2, size=64, positive=True, lesion_range="huge")


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
    ({"anatomy": "eldery"}, "elderly"),
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
    series = _regenerate(summary, slices=3)
    with summary.csv_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label", "patient_id", "slice_index", "series_label"]
    assert len(rows) == summary.n_slices == 12 and summary.n_positive_series == 2
    assert sum(int(r["label"]) for r in rows) == summary.n_positive_slices
    for r in rows:
        assert "\\" not in r["path"] and r["path"].split("/")[0] == ("positive" if r["label"] == "1" else "negative")
        assert r["patient_id"] in r["path"] and f"_s{int(r['slice_index']):02d}" in r["path"]
        img = cv2.imread(str(out / r["path"]), cv2.IMREAD_UNCHANGED)
        s = series[int(r["patient_id"][1:])]
        assert img.dtype == (np.uint8 if s.bits_stored == 8 else np.uint16) and img.shape == (SIZE, SIZE)
        assert np.array_equal(img, s.images[int(r["slice_index"])])  # display polarity, as stored
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


def _regenerate(summary, slices: int, size: int = SIZE, **kwargs) -> list:
    """The series write_dataset drew, patient by patient."""
    children = np.random.SeedSequence(summary.seed).spawn(summary.n_patients)
    return [generate_series(c, slices=slices, size=size, positive=bool(p), patient_id=f"P{i:04d}", **kwargs)
            for i, (c, p) in enumerate(zip(children, _labels(summary.n_patients, summary.seed)))]


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom")
    summary = write_dataset(out, patients=6, slices=3, fmt="dicom", seed=11, size=SIZE)
    return out, summary, _regenerate(summary, slices=3)


def _labels(n, seed):
    from asinfer.trainer.phantoms import series_labels

    return series_labels(n, 0.5, seed)


def test_dicom_round_trip_through_pydicom(dicom_dir):
    out, summary, series = dicom_dir
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == summary.n_slices == 18
    studies = set()
    for path in files:
        ds = pydicom.dcmread(path)
        pid, idx = ds.PatientID, int(path.stem.split("_s")[1])
        s = next(x for x in series if x.patient_id == pid)
        assert np.array_equal(ds.pixel_array, s.stored(idx))
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.Modality == "MR"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        allocated = 8 if s.bits_stored == 8 else 16
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
            allocated, s.bits_stored, s.bits_stored - 1, 0)
        assert ds.PhotometricInterpretation == s.photometric and ds.InstanceNumber == idx + 1
        assert str(ds.PatientName) == f"PHANTOM^{pid}" and "SYNTHETIC PHANTOM" in ds.SeriesDescription
        assert float(ds.PixelSpacing[0]) == pytest.approx(s.pixel_spacing[0], rel=1e-5)
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(s.slice_positions[idx])
        assert float(ds.MagneticFieldStrength) == pytest.approx(s.field_strength_t)
        assert ("WindowWidth" in ds) == (s.window is not None)
        studies.add((pid, ds.StudyInstanceUID, ds.SeriesInstanceUID))
    assert len(studies) == 6  # one study and series per patient


def test_dicom_is_byte_identical_for_a_seed(dicom_dir, tmp_path):
    out, _, _ = dicom_dir
    write_dataset(tmp_path, patients=6, slices=3, fmt="dicom", seed=11, size=SIZE)
    assert _digest(tmp_path) == _digest(out)


def test_dicom_round_trip_through_engine_reader(dicom_dir):
    from asinfer import engine

    out, _, series = dicom_dir
    for path in sorted(out.rglob("*.dcm")):
        frames = engine.read_frames(path)
        s = next(x for x in series if x.patient_id in path.name)
        i = int(path.stem.split("_s")[1])
        assert len(frames) == 1
        assert np.array_equal(np.asarray(frames[0].pixels), s.stored(i))
        assert frames[0].invert is (s.photometric == "MONOCHROME1") and frames[0].window == s.stored_window


def _with_storage(bits: int, export8: str, windowed: bool, photometric: str):
    """A small series stored this way (the profile forces bits, window and polarity; seeds pick the export)."""
    from dataclasses import replace

    profile = replace(PROFILES["mixed"], bits=((bits, 1.0),), window_p=float(windowed),
                      mono1_p=float(photometric == "MONOCHROME1"))
    for seed in range(40):
        s = generate_series(seed, slices=1, size=64, positive=False, profile=profile)
        if s.acquisition.storage.export8 == export8:
            return s
    raise AssertionError("no seed drew the export")


STORAGES = [(bits, export8, windowed, photometric) for bits, export8 in ((8, "full"), (8, "shift"), (12, ""), (16, ""))
            for windowed in (True, False) for photometric in ("MONOCHROME2", "MONOCHROME1")]


@pytest.mark.parametrize("bits, export8, windowed, photometric", STORAGES)
def test_every_storage_is_written_and_read_back_by_the_engine_with_its_polarity(
        bits, export8, windowed, photometric, tmp_path):
    from asinfer import engine
    from asinfer.trainer.phantoms import write_dicom_slice

    s = _with_storage(bits, export8, windowed, photometric)
    assert s.images.dtype == (np.uint8 if bits == 8 else np.uint16) and s.images.max() <= (1 << bits) - 1
    assert (s.window is not None) == windowed
    if export8 == "full":
        assert s.images.min() == 0 and s.images.max() == 255  # windowed onto the whole 8-bit range
    path = tmp_path / "slice.dcm"
    write_dicom_slice(path, s, 0)
    ds = pydicom.dcmread(path)
    assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (8 if bits == 8 else 16, bits,
                                                                                photometric)
    if photometric == "MONOCHROME1":  # the file holds inverted values: fluid is dark in the raw pixels
        assert np.array_equal(ds.pixel_array, (1 << bits) - 1 - s.images[0].astype(np.int64))
    (frame,) = engine.load_frames(path)
    assert frame.invert is (photometric == "MONOCHROME1") and (frame.window is None) == (not windowed)
    shown = engine.to_uint8(frame).astype(int)
    meant = engine.to_uint8(engine.Frame(s.images[0], "ref", window=s.window)).astype(int)
    assert np.abs(shown - meant).max() <= 1  # the engine displays it in the right polarity
    (item,) = engine.load_slices(path)
    assert item.ok and item.image.shape == (224, 224)


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_png_bit_depth_follows_the_series(bits, tmp_path):
    import cv2
    from dataclasses import replace

    profile = replace(PROFILES["mixed"], bits=((bits, 1.0),), mono1_p=1.0)
    summary = write_dataset(tmp_path, patients=1, slices=1, fmt="png", seed=4, size=64, profile=profile)
    (s,) = _regenerate(summary, slices=1, size=64, profile=profile)
    path = next(tmp_path.rglob("*.png"))
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img.dtype == (np.uint8 if bits == 8 else np.uint16) and s.photometric == "MONOCHROME1"
    assert np.array_equal(img, s.images[0])  # PNG has no MONOCHROME1: display polarity


def test_held_out_dataset_is_written_and_described(tmp_path):
    import json

    summary = write_dataset(tmp_path, patients=2, slices=2, fmt="dicom", seed=1, size=64, **HELD_OUT)
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert (info["profile"], info["anatomy"]) == (HELD_OUT["profile"], HELD_OUT["anatomy"])
    assert (summary.profile, summary.anatomy) == (HELD_OUT["profile"], HELD_OUT["anatomy"])
    for s in _regenerate(summary, slices=2, size=64, **HELD_OUT):
        assert s.anatomy == HELD_OUT["anatomy"] and s.label == int(meets_asas(s.lesions))


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


def test_render_variety_zero_renders_as_before_and_one_draws_each_departure_with_the_truth_kept():
    plain = generate_series(11, slices=4, size=96, positive=True)
    np.testing.assert_array_equal(plain.images, generate_series(11, slices=4, size=96, positive=True,
                                                                render_variety=0.0).images)
    assert plain.acquisition.rendering.kspace is None and plain.geometry.marrow_patches is None
    varied = [generate_series(600 + k, slices=6, size=96, positive=bool(k % 2), render_variety=1.0) for k in range(6)]
    for k, s in enumerate(varied):
        assert s.acquisition.rendering.kspace is not None and s.acquisition.rendering.ghosts is not None
        assert s.geometry.marrow_patches is not None
        assert s.label == k % 2 and s.slice_labels == [int(m.any()) for m in s.masks]
    some = [generate_series(700 + k, slices=2, size=64, positive=False, render_variety=0.5) for k in range(24)]
    drawn = sum(s.acquisition.rendering.kspace is not None for s in some)
    assert 4 <= drawn <= 20  # about half the series
    with pytest.raises(ValueError, match="render_variety"):
        generate_series(1, slices=2, size=64, positive=False, render_variety=-0.1)


def test_kspace_truncation_rings_at_edges_and_ghosts_repeat_along_one_axis():
    import importlib

    acquisition = importlib.import_module("asinfer.trainer.phantoms._acquisition")
    step = np.zeros((64, 64), np.float32)
    step[:, 16:48] = 1.0
    np.testing.assert_allclose(acquisition.kspace_truncate(step, (1.0, 1.0)), step, atol=1e-5)
    ringing = acquisition.kspace_truncate(step, (0.4, 1.0))
    assert ringing.max() > 1.05 and ringing.min() < -0.05  # Gibbs over- and undershoot beside the edges
    assert abs(float(ringing.mean()) - float(step.mean())) < 1e-4  # the DC term is kept
    np.testing.assert_allclose(ringing[0], ringing[40])  # truncated along x only: rows stay alike
    dot = np.zeros((64, 64), np.float32)
    dot[32, 32] = 1.0
    ghosted = acquisition.add_ghosts(dot, (0, 10.0, 0.05))
    assert ghosted[32, 32] == 1.0 and ghosted[42, 32] == pytest.approx(0.05) and ghosted[52, 32] == pytest.approx(0.025)
    assert ghosted[32, 42] == 0.0  # only along the phase-encode axis


def test_the_contact_sheet_names_the_renderings_a_series_drew():
    import importlib

    sheet = importlib.import_module("asinfer.trainer.phantoms.contact_sheet")
    assert sheet._rendering(generate_series(5, slices=2, size=64, positive=False)) == []
    varied = generate_series(5, slices=2, size=64, positive=False, render_variety=1.0)
    assert sheet._rendering(varied) == ["patchy marrow, k-space ringing, ghosts"]


def _solidity(masks) -> float:
    """Mean area / convex-hull area of the lesion regions in ``masks`` (1.0: convex like an ellipse)."""
    import cv2

    values = []
    for m in masks:
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        values += [cv2.contourArea(c) / cv2.contourArea(cv2.convexHull(c)) for c in contours
                   if cv2.contourArea(cv2.convexHull(c)) > 30]
    return float(np.mean(values))


def test_lesion_variety_zero_draws_as_before_and_one_gives_every_lesion_another_look_with_the_truth_kept():
    import importlib

    lesions = importlib.import_module("asinfer.trainer.phantoms._lesions")
    plain = generate_series(11, slices=4, size=96, positive=True)
    np.testing.assert_array_equal(plain.images, generate_series(11, slices=4, size=96, positive=True,
                                                                lesion_variety=0.0).images)
    plans = [p for k in range(40) for p in lesions.plan_lesions(np.random.default_rng(k), 12, True, "wide", 1.0)]
    assert plans and all(p.look is not None for p in plans)
    assert all(p.look is None for k in range(10) for p in lesions.plan_lesions(np.random.default_rng(k), 12, True))
    half = [p.look is not None for k in range(40) for p in lesions.plan_lesions(np.random.default_rng(k), 12, True,
                                                                                  "wide", 0.5)]
    assert 0.3 < np.mean(half) < 0.7
    shapes = {}
    for variety in (0.0, 1.0):
        series = [generate_series(300 + k, slices=6, size=256, positive=True, lesion_variety=variety) for k in range(8)]
        for s in series:  # where a lesion lies, and so the ASAS truth, is drawn as before
            assert s.label == 1 and s.slice_labels == [int(m.any()) for m in s.masks]
        shapes[variety] = _solidity([m for s in series for m in s.masks])
    assert shapes[1.0] < shapes[0.0] - 0.02  # bent outlines: wedges and lobes, not only ellipses
    with pytest.raises(ValueError, match="lesion_variety"):
        generate_series(1, slices=2, size=64, positive=True, lesion_variety=1.5)
