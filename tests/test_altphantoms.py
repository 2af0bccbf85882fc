"""The independent (test-only) phantom source, trainer.altphantoms: truth, files, CLI, and its independence."""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from asinfer import engine
from asinfer.engine.cli import app
from asinfer.trainer.altphantoms import PROFILE, Scan, generate_series, generate_with_maps, write_dataset
from asinfer.trainer.phantoms import Series, meets_asas

SIZE = 128
PACKAGE = Path(__file__).resolve().parent.parent / "trainer" / "altphantoms"
SIDE_CODE = {"R": 2, "L": 3}  # SliceMaps.marrow: image-left ilium is the patient's right


@pytest.fixture(scope="module")
def drawn():
    """Six positive and six negative small series with their bone and joint maps."""
    pos = [generate_with_maps(s, slices=5, size=SIZE, positive=True) for s in range(6)]
    neg = [generate_with_maps(100 + s, slices=5, size=SIZE, positive=False) for s in range(6)]
    return pos, neg


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_series_record_shape_and_12_bits(drawn):
    s, _ = drawn[0][0]
    assert isinstance(s, Series) and isinstance(s.acquisition, Scan)
    assert s.images.shape == s.masks.shape == (5, SIZE, SIZE)
    assert s.images.dtype == np.uint16 and int(s.images.max()) <= 4095 and int(s.images.max()) > 1000
    assert s.profile == PROFILE == "independent"
    assert s.pixel_spacing[0] == pytest.approx(s.fov_mm / SIZE)
    assert s.spacing_between_slices >= s.slice_thickness > 0
    assert np.all(np.diff(s.slice_positions) < 0)  # cranial first
    assert s.window[1] > 0


def test_same_seed_same_series_and_maps_do_not_change_it():
    a = generate_series(11, slices=3, size=96, positive=True)
    b, _ = generate_with_maps(11, slices=3, size=96, positive=True)
    c = generate_series(12, slices=3, size=96, positive=True)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks) and a.lesions == b.lesions
    assert not np.array_equal(a.images, c.images)


def test_label_follows_the_asas_rule_and_the_class(drawn):
    pos, neg = drawn
    for s, _ in pos + neg:
        assert s.label == int(meets_asas(s.lesions))
        assert s.slice_labels == [int(bool(ls)) for ls in s.lesions] == [int(m.any()) for m in s.masks]
    assert all(s.label == 1 and sum(s.slice_labels) >= 1 for s, _ in pos)
    for s, _ in neg:
        assert s.label == 0 and not any(s.lesions) and not s.masks.any()


def test_lesion_masks_lie_in_marrow_beside_the_joint(drawn):
    for s, maps in drawn[0]:
        for i, lesions in enumerate(s.lesions):
            if not lesions:
                continue
            inside = s.masks[i]
            assert np.all(maps[i].marrow[inside] > 0), "oedema outside the marrow"
            assert float(maps[i].joint_mm[inside].max()) < 25.0, "oedema too far from the joint to be subchondral"
            for les in lesions:
                assert les.area_mm2 >= 12.0 and les.area_px >= 1
                x, y = (int(round(v)) for v in les.center_px)
                want = 1 if les.bone == "sacrum" else SIDE_CODE[les.side]
                codes = maps[i].marrow[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4]
                assert want in codes, (les, np.unique(codes))


def test_negatives_carry_mimics(drawn):
    kinds = {k for s, _ in drawn[1] for fs in s.findings for k in fs}
    assert kinds - {"foramina"}, "no mimic drawn in six negative series"


@pytest.mark.parametrize("kwargs, word", [({"slices": 0}, "slices"), ({"size": 32}, "size"),
                                          ({"size": 96.5}, "size")])
def test_bad_arguments_are_refused(kwargs, word):
    with pytest.raises(ValueError, match=word):
        generate_series(0, positive=True, **{"slices": 2, **kwargs})
    with pytest.raises(ValueError, match="seed"):
        generate_series("seven", slices=2, size=96, positive=True)


@pytest.fixture(scope="module")
def dicom_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("path with spaces")
    summary = write_dataset(root / "independent set", patients=3, slices=3, fmt="dicom", seed=4, size=96)
    write_dataset(root / "png set", patients=3, slices=3, fmt="png", seed=4, size=96)
    return root / "independent set", summary


def test_dataset_layout_labels_and_notes(dicom_set):
    out, summary = dicom_set
    rows = list(csv.DictReader((out / "labels.csv").open(encoding="utf-8")))
    assert list(rows[0]) == ["path", "label", "patient_id", "slice_index", "series_label"]
    assert len(rows) == summary.n_slices == 9 and summary.profile == "independent"
    for row in rows:
        assert (out / row["path"]).is_file()
        assert row["path"].split("/")[0] == ("positive" if row["label"] == "1" else "negative")
        assert row["patient_id"].startswith("IND")
    assert sum(int(r["label"]) for r in rows) == summary.n_positive_slices
    assert len({r["patient_id"] for r in rows if r["series_label"] == "1"}) == summary.n_positive_series
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert "SYNTHETIC PHANTOM - independent test source - not patient data" in readme and "never" in readme
    info = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert info["synthetic"] is True and info["test_only"] is True


def test_dicom_files_read_back_through_the_engine(dicom_set):
    """The engine reads every DICOM slice, with the same pixels as the PNG set of the same seed."""
    out, _ = dicom_set
    files = sorted(out.rglob("*.dcm"))
    frames = list(engine.load_frames(files))
    assert len(frames) == len(files) == 9
    png_set = out.parent / "png set"
    for frame in frames:
        png = next(png_set.rglob(Path(frame.source).stem + ".png"))
        assert np.array_equal(np.asarray(frame.pixels), cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
        assert frame.window is not None
    slices = list(engine.load_slices(files))
    assert all(s.ok for s in slices) and slices[0].image.shape == (224, 224)
    ds = pydicom.dcmread(files[0])
    assert "SYNTHETIC" in ds.SeriesDescription and ds.BitsStored == 12 and ds.Modality == "MR"
    series_uids = {pydicom.dcmread(f).PatientID: pydicom.dcmread(f).SeriesInstanceUID for f in files}
    assert len(set(series_uids.values())) == 3


def test_same_seed_same_bytes_and_patients_independent_of_the_total(tmp_path):
    a = write_dataset(tmp_path / "a", patients=2, slices=2, fmt="dicom", seed=9, size=64, positive_fraction=1.0)
    write_dataset(tmp_path / "b", patients=2, slices=2, fmt="dicom", seed=9, size=64, positive_fraction=1.0)
    write_dataset(tmp_path / "c", patients=3, slices=2, fmt="dicom", seed=9, size=64, positive_fraction=1.0)
    da, db, dc = (_digest(tmp_path / k) for k in "abc")
    assert a.n_patients == 2 and da == db
    shared = [k for k in da if "IND000" in k]
    assert shared and all(da[k] == dc[k] for k in shared)


def test_invalid_format_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="Valid formats"):
        write_dataset(tmp_path, patients=1, fmt="nifti")


def test_cli_writes_an_independent_test_set(tmp_path):
    runner = CliRunner()
    out = tmp_path / "test set"
    result = runner.invoke(app, ["synth", str(out), "--source", "independent", "--patients", "2", "--slices", "2",
                                 "--size", "64", "--format", "dicom"])
    assert result.exit_code == 0, result.output
    assert "4 slices of 2 synthetic patients" in result.stdout and "FOR TESTING ONLY" in result.stdout
    assert "independent test source" in (out / "README.txt").read_text(encoding="utf-8")
    assert len(list(out.rglob("IND*.dcm"))) == 4
    bad = runner.invoke(app, ["synth", str(tmp_path / "x"), "--source", "mixed"])
    assert bad.exit_code == 2 and "Valid sources are" in bad.stderr
    both = runner.invoke(app, ["synth", str(tmp_path / "y"), "--source", "independent", "--profile", "low-field"])
    assert both.exit_code == 2 and "--profile" in both.stderr


def _absolute(node: ast.ImportFrom) -> str:
    base = ["asinfer", "trainer", "altphantoms"][: 3 - node.level + 1] if node.level else []
    return ".".join(base + ([node.module] if node.module else []))


def test_source_imports_nothing_of_the_training_drawing_code():
    """Only the truth record, the rule and dataset helpers may come from trainer.phantoms, by public names."""
    allowed = {"Series", "Lesion", "meets_asas", "DatasetSummary", "series_labels", "baseline_aucs",
               "as_rng", "check_dataset_args", "collect_features"}  # records, the rule, checks, baseline features
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("asinfer.trainer.phantoms") for a in node.names), path.name
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(node)
                assert not module.startswith("asinfer.trainer.phantoms._"), (path.name, module)
                if module.startswith("asinfer.trainer.phantoms"):
                    assert {a.name for a in node.names} <= allowed, (path.name, module)


def test_no_training_drawing_code_runs_while_generating_and_writing(tmp_path):
    """A subprocess traces every Python call: of trainer/phantoms only the ASAS rule and the label draw run."""
    code = f"""
import json, sys
from pathlib import Path
ran = set()
def trace(frame, event, arg):
    if event == "call" and Path(frame.f_code.co_filename).parent.name == "phantoms":
        f = frame
        while f.f_code.co_name.startswith("<") and f.f_back is not None:  # a comprehension: its function
            f = f.f_back
        ran.add(Path(frame.f_code.co_filename).name + ":" + f.f_code.co_name)
import asinfer.trainer.altphantoms as alt
sys.setprofile(trace)
alt.generate_series(1, slices=3, size=64, positive=True)
alt.write_dataset({str(tmp_path / "set")!r}, patients=2, slices=2, size=64, fmt="dicom")
sys.setprofile(None)
print(json.dumps(sorted(ran)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    ran = set(json.loads(out.strip().splitlines()[-1]))
    assert "_lesions.py:meets_asas" in ran  # the trace sees trainer.phantoms code when it runs
    assert ran <= {"_lesions.py:meets_asas", "_dataset.py:series_labels", "_series.py:as_rng",
                   "_dataset.py:check_dataset_args"}, ran


def test_the_trainer_refuses_to_train_on_the_test_only_source(tmp_path):
    from asinfer.trainer.altphantoms import write_dataset
    from asinfer.trainer.train import TrainConfig, train

    write_dataset(tmp_path / "independent", patients=2, slices=2, size=96)
    with pytest.raises(ValueError, match="test-only"):
        train(TrainConfig(data=str(tmp_path / "independent"), image_size=32, epochs=1), tmp_path / "run")
    assert not (tmp_path / "run" / "model.keras").exists()


def test_independent_series_answer_the_storage_questions_as_training_series_do():
    s = generate_series(5, slices=2, size=96, positive=False)
    assert s.anatomy == PROFILE and s.stored_window == s.window
    np.testing.assert_array_equal(s.stored(1), s.images[1])
