"""asinfer report: a DICOM SR (TID 1500) and Secondary Capture evidence per series, re-read and checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from asinfer import engine

from conftest import dicom_file

hd = pytest.importorskip("highdicom", reason="needs the dicom extra (.ci/run installs it with dev)")


@pytest.fixture(scope="module")
def shipped():
    return engine.load(provider="cpu")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Two phantom DICOM series of 4 slices (one positive patient), as `asinfer synth` writes them."""
    from asinfer.trainer.phantoms import write_dataset

    root = tmp_path_factory.mktemp("report") / "data"
    write_dataset(root, patients=2, slices=4, fmt="dicom", seed=5, size=128, positive_fraction=0.5)
    return root


@pytest.fixture(scope="module")
def reported(shipped, phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    series = shipped.predict_series(phantoms)
    return series, [shipped.report(s, out / s.key) for s in series]


def _source_headers(series) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p.source, stop_before_pixels=True) for p in series.slices]


def _code(item) -> str:
    return item.ConceptNameCodeSequence[0].CodeValue


def _texts(item, wanted: dict[str, str]) -> dict[str, list[str]]:
    """TEXT values of the concepts ``wanted`` (code -> name) found directly under ``item``."""
    found: dict[str, list[str]] = {name: [] for name in wanted.values()}
    for child in item.ContentSequence:
        if child.ValueType == "TEXT" and _code(child) in wanted:
            found[wanted[_code(child)]].append(child.TextValue)
    return found


def test_sr_content_tree_holds_the_decision_the_model_and_the_references(shipped, reported):
    series, files = reported
    assert len(files) == 2 and all(f.ok for f in files)
    for s, f in zip(series, files):
        sources = _source_headers(s)
        sr = hd.sr.srread(f.sr)
        assert isinstance(sr, hd.sr.Comprehensive3DSR) and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
        assert sr.VerificationFlag == "UNVERIFIED" and sr.CompletionFlag == "COMPLETE"
        assert "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription
        # the source's patient and study, a new series
        assert (sr.PatientID, sr.StudyInstanceUID) == (sources[0].PatientID, sources[0].StudyInstanceUID)
        assert sr.SeriesInstanceUID != s.key and sr.SpecificCharacterSet == sources[0].SpecificCharacterSet
        assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"

        (group,) = sr.content.get_image_measurement_groups()
        assert group.finding_type.value == "409774005"  # inflammation
        assert [site.value.value for site in group.finding_sites] == ["39723000"]  # sacroiliac joint
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.value.meaning == ("Present" if s.label == shipped.manifest.labels[1] else "Absent")
        score, threshold = group.get_measurements()
        assert score.value == pytest.approx(s.score, abs=1e-6)
        assert threshold.value == pytest.approx(shipped.series_rule.threshold, abs=1e-6)
        algorithm = _texts(group[0], {"111001": "name", "111003": "version", "111002": "parameter"})
        assert algorithm["name"] == [shipped.manifest.name] and algorithm["version"] == [shipped.manifest.version]
        assert any(shipped.artifact.sha256 in p for p in algorithm["parameter"])
        driving = {(src, frame) for src, frame in s.driving}
        expected = {p.identity.sop_uid for p in s.slices if (p.source, p.frame) in driving}
        assert {i.referenced_sop_instance_uid for i in group.source_images} == expected
        assert [o.observer_type.meaning for o in sr.content.get_observer_contexts()] == ["Device"]
        comments = [i.TextValue for i in group[0].ContentSequence if _code(i) == "121106"]
        assert comments and "NOT FOR DIAGNOSTIC USE" in comments[0]

        # every slice is evidence and in the image library, with its own position
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        all_sops = {h.SOPInstanceUID for h in sources}
        assert {r.ReferencedSOPInstanceUID for r in evidence.ReferencedSOPSequence} == all_sops
        (library,) = [i for i in sr.ContentSequence if _code(i) == "111028"]
        images = [i for g in library.ContentSequence for i in g.ContentSequence if i.ValueType == "IMAGE"]
        assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images} == all_sops
        by_sop = {h.SOPInstanceUID: h for h in sources}
        for image in images:
            z = [i for i in image.ContentSequence if _code(i) == "110903"]  # Image Position (Patient) Z
            want = by_sop[image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID].ImagePositionPatient[2]
            assert float(z[0].MeasuredValueSequence[0].NumericValue) == pytest.approx(float(want), abs=1e-3)

        purposes = {(e.Manufacturer, e.PurposeOfReferenceCodeSequence[0].CodeValue)
                    for e in sr.ContributingEquipmentSequence}
        assert ("asinfer", "109102") in purposes  # this engine, processing equipment
        assert (sources[0].Manufacturer, "109101") in purposes  # the scanner, acquisition equipment


def test_secondary_capture_burns_the_evidence_into_the_driving_slices(shipped, reported):
    series, files = reported
    heated = 0
    for s, f in zip(series, files):
        assert len(f.sc) == len(s.driving) >= 1
        sources = {p.identity.sop_uid: pydicom.dcmread(p.source) for p in s.slices}
        paths = {p.identity.sop_uid: p.source for p in s.slices}
        for path in f.sc:
            sc = pydicom.dcmread(path)
            assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
            assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
            assert "NOT FOR DIAGNOSTIC USE" in sc.SeriesDescription and "NOT FOR DIAGNOSTIC USE" in sc.ImageComments
            source = sources[sc.SourceImageSequence[0].ReferencedSOPInstanceUID]
            assert (sc.StudyInstanceUID, sc.PatientID) == (source.StudyInstanceUID, source.PatientID)
            assert sc.SeriesInstanceUID not in (s.key, hd.sr.srread(f.sr).SeriesInstanceUID)
            pixels = hd.imread(path).get_frame(1)
            assert pixels.shape == (source.Rows, source.Columns, 3)
            red, green = pixels[..., 0].astype(int), pixels[..., 1].astype(int)
            (explained,) = shipped.explain([paths[sc.SourceImageSequence[0].ReferencedSOPInstanceUID]])
            if explained.cam.max() > 0:  # evidence: a heat map is burned in (a grey slice has R == G)
                assert np.abs(red - green).max() > 60
                heated += 1
            else:  # a CAM that is zero everywhere draws no heat (the caption says so)
                assert np.array_equal(red, green)
            assert list(sc.PatientOrientation) == ["L", "P"]  # axial phantoms: rows run to the left, columns back
    assert heated >= 1  # the positive phantom's evidence shows somewhere


def test_the_same_series_and_model_give_the_same_uids_and_whole_files(shipped, phantoms, reported, tmp_path):
    series, first = reported
    again = shipped.report(series[0], tmp_path / "again")
    assert again.uids == first[0].uids
    assert hd.sr.srread(again.sr).SOPInstanceUID == hd.sr.srread(first[0].sr).SOPInstanceUID
    assert not list(tmp_path.rglob("*.partial"))


def test_character_set_and_a_non_ascii_patient_name_survive(shipped, phantoms, tmp_path):
    folder = tmp_path / "utf8"
    folder.mkdir()
    for path in sorted(phantoms.rglob("*.dcm"))[:8]:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "Müller^Zoë=山田^太郎"
        ds.StudyTime = "14:04:38"  # the old ACR-NEMA form some archives still send
        ds.save_as(folder / path.name)
    for s in shipped.predict_series(folder):
        f = shipped.report(s, tmp_path / "out" / s.key)
        assert f.ok, f.message
        for path in (f.sr, *f.sc):
            ds = pydicom.dcmread(path)
            assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == "Müller^Zoë=山田^太郎"
            assert ds.StudyTime == "140438"


def test_series_that_cannot_be_reported_say_why_and_write_nothing(shipped, phantoms, tmp_path):
    import cv2

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    cv2.imwrite(str(pngs / "a.png"), np.full((64, 64), 90, np.uint8))
    (not_dicom,) = shipped.predict_series(pngs)
    assert shipped.report(not_dicom, tmp_path / "r1").reason == "not-dicom"

    damaged = tmp_path / "damaged"
    shutil.copytree(phantoms, damaged)
    victim = sorted(damaged.rglob("*.dcm"))[0]
    victim.write_bytes(victim.read_bytes()[:-5000])  # its pixel data cut short: a failed slice in its series
    undecided = [s for s in shipped.predict_series(damaged, strict=True) if s.n_failed]
    assert len(undecided) == 1 and undecided[0].label is None
    result = shipped.report(undecided[0], tmp_path / "r2")
    assert result.reason == "no-decision" and "incomplete-series" in result.message and result.sr is None
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_multi_frame_sources_are_referenced_by_frame(shipped, tmp_path):
    (s,) = shipped.predict_series(dicom_file("SC_rgb_rle_2frame.dcm"))
    f = shipped.report(s, tmp_path / "mf")
    assert f.ok, f.message
    (group,) = hd.sr.srread(f.sr).content.get_image_measurement_groups()
    frames = [i.referenced_frame_numbers for i in group.source_images]
    assert frames == [[frame + 1] for _, frame in s.driving]
    assert pydicom.dcmread(f.sc[0]).SourceImageSequence[0].ReferencedFrameNumber == s.driving[0][1] + 1


def test_cli_report_rows_exit_codes_and_no_patient_data_on_the_terminal(phantoms, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    runner = CliRunner()
    done = runner.invoke(app, ["report", str(phantoms), "--out", str(tmp_path / "R"), "-f", "json"])
    assert done.exit_code == 0, done.output
    rows = json.loads(done.stdout)
    assert len(rows) == 2 and all(Path(r["sr"]).is_file() and r["sc"] for r in rows)
    assert "2 of 2 series reported" in done.stderr
    name = str(pydicom.dcmread(next(phantoms.rglob("*.dcm"))).PatientName)
    assert name not in done.stdout + done.stderr

    mixed = tmp_path / "mixed"
    shutil.copytree(phantoms, mixed / "dicom")
    (mixed / "pngs").mkdir()
    import cv2

    cv2.imwrite(str(mixed / "pngs" / "a.png"), np.full((64, 64), 90, np.uint8))
    partly = runner.invoke(app, ["report", str(mixed), "--out", str(tmp_path / "R2")])
    assert partly.exit_code == 1 and "not reported: not-dicom" in partly.stdout and "2 of 3" in partly.stderr

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "highdicom" else real(n, *a))
    missing = runner.invoke(app, ["report", str(phantoms), "--out", str(tmp_path / "R3")])
    assert missing.exit_code == 2 and "pip install 'asinfer[dicom]'" in missing.stderr


_REPORT_WITH = """
import hashlib, importlib, json, sys
from pathlib import Path
from asinfer import engine
lean = importlib.import_module("asinfer.engine._highdicom")
full_map = importlib.import_module("highdicom._standard_utils").get_module_attribute_map  # before any patch
mode, data, out = sys.argv[1:]
if mode == "own":
    lean._state["lean"] = False  # as if the installed highdicom differed from the extract
clf = engine.load(provider="cpu")
for s in clf.predict_series(data):
    assert clf.report(s, Path(out) / s.key).ok
source = lean._source_path().read_bytes()
print(json.dumps({"loaded_full_map": full_map.cache_info().currsize,
                  "extract_current": lean.extract_root_attributes(source) == json.loads(lean.EXTRACT.read_text())}))
"""


def test_reports_use_the_shipped_extract_of_highdicoms_attribute_map_and_come_out_the_same(phantoms, tmp_path):
    import subprocess
    import sys

    def write(mode: str) -> dict:
        done = subprocess.run([sys.executable, "-c", _REPORT_WITH, mode, str(phantoms), str(tmp_path / mode)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.splitlines()[-1])

    lean, own = write("lean"), write("own")
    assert lean["extract_current"], "highdicom changed: regenerate with python -m asinfer.engine._highdicom"
    assert (lean["loaded_full_map"], own["loaded_full_map"]) == (0, 1)

    def timeless(item):  # the writing time differs between the two runs; every other value must not
        if isinstance(item, list):
            return [timeless(v) for v in item]
        if isinstance(item, dict):
            return {k: timeless(v) for k, v in item.items() if not (isinstance(v, dict) and v.get("vr") in ("DA", "TM", "DT"))}
        return item

    files = sorted(p.relative_to(tmp_path / "own") for p in (tmp_path / "own").rglob("*.dcm"))
    assert files and files == sorted(p.relative_to(tmp_path / "lean") for p in (tmp_path / "lean").rglob("*.dcm"))
    for name in files:
        own_file, lean_file = (pydicom.dcmread(tmp_path / mode / name) for mode in ("own", "lean"))
        assert timeless(own_file.to_json_dict()) == timeless(lean_file.to_json_dict())
        assert (own_file.StudyDate, own_file.PatientBirthDate) == (lean_file.StudyDate, lean_file.PatientBirthDate)
