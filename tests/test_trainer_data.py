"""Trainer data: CSV and class-folder layouts, patient-wise split, preprocessing through the engine."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from asinfer.engine import Preprocessor
from asinfer.trainer.data import load_images, parse_label, read_index, split_by_patient

from conftest import rng_image


@pytest.fixture()
def csv_dataset(tmp_path):
    rows = ["path,label,patient_id,slice_index,series_label"]
    for p in range(10):
        for s in range(3):
            label = int(p % 2 == 1 and s > 0)
            rel = f"{'positive' if label else 'negative'}/P{p:04d}_s{s:02d}.png"
            (tmp_path / rel).parent.mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / rel), rng_image((40, 40), np.uint16, seed=p * 10 + s))
            rows.append(f"{rel},{label},P{p:04d},{s},{p % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_csv_layout_with_patients(csv_dataset):
    records = read_index(csv_dataset)
    assert len(records) == 30 and sum(r.label for r in records) == 10
    assert records[0].patient_id == "P0000" and records[0].path.exists()


def test_split_keeps_patients_whole_and_stratifies(csv_dataset):
    records = read_index(csv_dataset)
    split = split_by_patient(records, val=0.2, test=0.2, seed=1)
    groups = [{records[i].patient_id for i in idx} for idx in (split.train, split.val, split.test)]
    assert split.by_patient
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sorted(split.train + split.val + split.test) == list(range(30))
    for idx in (split.val, split.test):  # each held-out split gets a positive patient
        assert any(records[i].label for i in idx)


def test_class_folders(tmp_path):
    for name, n in (("no_as", 3), ("AS", 2)):
        (tmp_path / name / "deep").mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(tmp_path / name / "deep" / f"{i}.png"), rng_image((16, 16), seed=i))
    records = read_index(tmp_path)
    assert sorted(r.label for r in records) == [0, 0, 0, 1, 1]
    assert not split_by_patient(records).by_patient


def test_unknown_label_names_the_valid_ones():
    with pytest.raises(ValueError, match="positive:"):
        parse_label("maybe")


def test_images_are_the_engines_preprocessing(csv_dataset):
    records = read_index(csv_dataset)[:4]
    (csv_dataset / "negative" / "P0000_s00.png").write_bytes(b"broken")
    images, labels, failures = load_images(records, 32)
    assert images.shape == (3, 32, 32, 1) and list(labels) == [r.label for r in records[1:]]
    assert len(failures) == 1 and "P0000_s00.png" in failures[0] and ": not-an-image: " in failures[0]
    expected = Preprocessor(size=(32, 32), threads=1)([cv2.imread(str(records[1].path), cv2.IMREAD_UNCHANGED)])
    np.testing.assert_array_equal(images[0], expected[0])


def test_cache_is_read_back_and_refreshed_when_a_file_changes(csv_dataset, tmp_path, monkeypatch):
    records = read_index(csv_dataset)[:4]
    images, labels, _ = load_images(records, 32, cache_dir=tmp_path / "cache")

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache was not used: the files were read again")

    with monkeypatch.context() as patch:
        patch.setattr("asinfer.trainer.data.load_slices", no_reading)
        again = load_images(records, 32, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], labels)
    cv2.imwrite(str(records[0].path), rng_image((40, 40), np.uint16, seed=999))  # same size, new content
    changed = load_images(records, 32, cache_dir=tmp_path / "cache")
    assert not np.array_equal(changed[0][0], images[0])
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_synthetic_marker_is_read_from_dataset_json(tmp_path, csv_dataset):
    from asinfer.trainer.data import read_dataset_info
    from asinfer.trainer.phantoms import write_dataset

    write_dataset(tmp_path / "phantoms", patients=1, slices=1, size=64)
    assert read_dataset_info(tmp_path / "phantoms")["synthetic"] is True
    assert read_dataset_info(tmp_path / "phantoms" / "labels.csv")["synthetic"] is True  # a CSV: its folder
    (csv_dataset / "README.txt").write_text("SYNTHETIC? no: a README mentioning the word marks nothing\n")
    assert read_dataset_info(csv_dataset) == {}
    (csv_dataset / "dataset.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        read_dataset_info(csv_dataset)
