"""Series: grouping, ordering through the body, duplicates, failed slices, and the series rule."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from asinfer.engine import Prediction, SeriesRule, SliceIdentity, group_series

from conftest import rng_image

LABELS = ("no AS", "AS")


@pytest.fixture(scope="module")
def two_series(tmp_path_factory) -> tuple[Path, list]:
    """Two phantom DICOM series (4 slices each), written flat into one folder."""
    from asinfer.trainer.phantoms import write_dataset

    root = tmp_path_factory.mktemp("series")
    write_dataset(root / "data", patients=2, slices=4, fmt="dicom", seed=3, size=64)
    flat = root / "flat"
    flat.mkdir()
    files = sorted((root / "data").rglob("*.dcm"))
    for f in files:
        shutil.copy(f, flat / f.name)
    return flat, files


def _keys(results):
    return sorted((r.key, r.n_slices) for r in results)


def test_several_series_in_one_folder_are_told_apart_and_ordered_by_position(classifier, two_series):
    flat, _ = two_series
    results = classifier.predict_series(flat)
    assert len(results) == 2 and all(r.grouped_by == "series-uid" and r.n_slices == 4 for r in results)
    for r in results:
        locations = [p.identity.location() for p in r.slices]
        assert locations == sorted(locations) and r.ordered_by == "position"
        assert r.description.startswith("SYNTHETIC") and r.modality == "MR" and r.study_uid


def test_one_series_over_several_folders_and_shuffled_order_is_one_series(classifier, two_series, tmp_path):
    _, files = two_series
    names = [f.name for f in files]
    random.Random(1).shuffle(names)
    sources = []
    for i, name in enumerate(names):  # each file in a folder of its own, in shuffled order
        folder = tmp_path / f"part{i}"
        folder.mkdir()
        shutil.copy(next(f for f in files if f.name == name), folder / name)
        sources.append(folder)
    shuffled = classifier.predict_series(sources)
    reference = classifier.predict_series(two_series[0])
    assert _keys(shuffled) == _keys(reference)
    by_key = {r.key: r for r in reference}
    for r in shuffled:
        assert [p.identity.sop_uid for p in r.slices] == [p.identity.sop_uid for p in by_key[r.key].slices]
        assert r.score == pytest.approx(by_key[r.key].score)


def test_a_duplicate_sop_instance_counts_once_and_is_reported(classifier, two_series, tmp_path):
    flat, files = two_series
    shutil.copytree(flat, tmp_path / "a")
    shutil.copy(files[0], tmp_path / "a" / "copy of first.dcm")
    results = classifier.predict_series(tmp_path / "a")
    assert sorted(r.n_duplicates for r in results) == [0, 1] and all(r.n_slices == 4 for r in results)


def test_a_failed_slice_is_reported_in_its_series_and_strict_withholds_the_decision(classifier, two_series, tmp_path):
    import pydicom

    flat, files = two_series
    shutil.copytree(flat, tmp_path / "a")
    victim = tmp_path / "a" / files[1].name
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]  # cut: this slice fails after its header was read
    ds.save_as(victim, enforce_file_format=True)
    results = {r.n_failed: r for r in classifier.predict_series(tmp_path / "a")}
    damaged = results[1]
    assert damaged.n_slices == 3 and damaged.label in LABELS and "1 slice(s) failed" in damaged.message
    assert results[0].message is None
    strict = {r.n_failed: r for r in classifier.predict_series(tmp_path / "a", strict=True)}
    assert strict[1].label is None and strict[1].reason == "incomplete-series" and strict[0].ok


def test_images_group_by_folder_and_groups_can_be_named(classifier, tmp_path):
    for folder, n in (("left", 2), ("right", 3)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / folder / f"{i}.png"), rng_image((32, 32), seed=i))
    results = classifier.predict_series(tmp_path)
    assert _keys(results) == [(str(tmp_path / "left"), 2), (str(tmp_path / "right"), 3)]
    assert all(r.grouped_by == "folder" and r.ordered_by == "file-name" for r in results)
    named = classifier.predict_series(groups={"arrays": [rng_image((32, 32)), rng_image((32, 32), seed=2)]})
    assert [(r.key, r.n_slices, r.grouped_by) for r in named] == [("arrays", 2, "group")]
    with pytest.raises(ValueError, match="either sources or groups"):
        classifier.predict_series(tmp_path, groups={"x": []})


def _p(prob: float, z: float, uid: str = "1.2.3", sop: str | None = None) -> Prediction:
    identity = SliceIdentity(series_uid=uid, sop_uid=sop or f"{uid}.{z}", position=(0.0, 0.0, z),
                             orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    return Prediction(f"/x/{z}.dcm", 0, prob, LABELS[prob >= 0.5], identity=identity)


def test_consecutive_rule_needs_two_neighbours_or_one_clear_slice():
    rule = SeriesRule("consecutive", threshold=0.5, single_slice_threshold=0.95)
    apart = [_p(0.9, 0), _p(0.1, 5), _p(0.8, 10)]  # two high slices, not neighbours
    (r,) = group_series(apart, rule, LABELS)
    assert r.score == pytest.approx(0.1) and r.label == "no AS"
    together = [_p(0.9, 0), _p(0.8, 5), _p(0.1, 10)]
    (r,) = group_series(together[::-1], rule, LABELS)  # order of arrival does not matter: position does
    assert r.score == pytest.approx(0.8) and r.label == "AS"
    assert [s for s, _ in r.driving] == ["/x/0.dcm", "/x/5.dcm"]
    clear = [_p(0.1, 0), _p(0.97, 5), _p(0.1, 10)]
    (r,) = group_series(clear, rule, LABELS)
    assert r.label == "AS" and [s for s, _ in r.driving] == ["/x/5.dcm"]


@pytest.mark.parametrize("kind, expected", [("max", 0.9), ("top_k_mean", 0.85), ("consecutive", 0.1)])
def test_the_rules_score_as_documented(kind, expected):
    (r,) = group_series([_p(0.9, 0), _p(0.1, 5), _p(0.8, 10)], SeriesRule(kind, 0.5, k=2), LABELS)
    assert r.score == pytest.approx(expected)


def test_a_series_whose_slices_all_failed_has_no_decision():
    failed = Prediction("/x/a.dcm", None, reason="truncated", message="cut")
    (r,) = group_series([failed], SeriesRule(), LABELS)
    assert r.label is None and r.reason == "no-slices" and r.n_failed == 1


def test_the_rule_travels_in_the_manifest_and_is_checked(tiny_bundle):
    import json

    from asinfer.engine import Manifest, ModelError

    data = json.loads((tiny_bundle / "manifest.json").read_text())
    data["series_rule"] = {"kind": "consecutive", "threshold": 0.4, "single_slice_threshold": 0.9}
    assert Manifest.from_dict(data).series_rule == SeriesRule("consecutive", 0.4, 0.9)
    data["series_rule"]["kind"] = "majority"
    with pytest.raises(ModelError, match="series_rule.kind 'majority'"):
        Manifest.from_dict(data)


def test_without_a_fitted_rule_the_slice_threshold_is_used(classifier):
    rule = classifier.series_rule
    assert rule.kind == "consecutive" and rule.threshold == classifier.threshold and "no series rule" in rule.fitted_on
    np.testing.assert_allclose(rule.decide([0.2, 0.7, 0.7])[0], 0.7)


# --- the CLI ---------------------------------------------------------------------------------------------------


def _cli(*args):
    from typer.testing import CliRunner

    from asinfer.engine.cli import app

    return CliRunner().invoke(app, ["predict", *map(str, args)])


def test_table_shows_series_rows_after_the_slice_rows(two_series, tiny_bundle):
    flat, _ = two_series
    result = _cli(flat, "-m", tiny_bundle)
    assert result.exit_code == 0, result.output
    slices_at, series_at = result.stdout.index(" source "), result.stdout.index(" series ")
    assert slices_at < series_at and result.stdout.count("#0") >= 2  # driving slices named as file#frame
    assert "2 series (" in result.stderr and "series rule consecutive" in result.stderr


def test_by_selects_the_rows_for_machines(two_series, tiny_bundle):
    import json

    flat, _ = two_series
    data = json.loads(_cli(flat, "-m", tiny_bundle, "-f", "json", "--by", "series").stdout)
    assert "results" not in data and len(data["series"]) == 2 and data["summary"]["series"] == 2
    assert all(s["n_slices"] == 4 and len(s["driving"]) in (1, 2) for s in data["series"])
    both = json.loads(_cli(flat, "-m", tiny_bundle, "-f", "json").stdout)
    assert len(both["results"]) == 8 and both["results"][0]["identity"]["series_uid"]
    lines = [json.loads(line) for line in _cli(flat, "-m", tiny_bundle, "-f", "jsonl").stdout.splitlines()]
    assert [("series" in x, "summary" in x) for x in lines[-3:]] == [(True, False), (True, False), (False, True)]
    rows = _cli(flat, "-m", tiny_bundle, "-f", "csv", "--by", "series").stdout.splitlines()
    assert rows[0].startswith("series,grouped_by,") and len(rows) == 3
    refused = _cli(flat, "-m", tiny_bundle, "-f", "csv", "--by", "both")
    assert refused.exit_code == 2 and "csv holds one kind of row" in refused.stderr


# --- the trainer fits the rule on validation patients ----------------------------------------------------------


def _truths(seed: int, n: int = 40):
    """Series of 6 slices: positives have a two-slice run of high probability somewhere, negatives isolated spikes."""
    from asinfer.trainer.series import SeriesTruth

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        probs = rng.uniform(0.0, 0.3, 6)
        if k % 2:
            at = rng.integers(0, 5)
            probs[at:at + 2] = rng.uniform(0.55, 0.9, 2)
        else:
            probs[rng.integers(0, 6)] = rng.uniform(0.55, 0.9)  # one bright mimic: not two neighbours
        out.append(SeriesTruth(f"P{k}", k % 2, tuple(float(p) for p in probs)))
    return out


def test_the_consecutive_rule_wins_where_lesions_span_neighbouring_slices():
    from asinfer.trainer.series import fit_series_rule, series_metrics

    rule = fit_series_rule(_truths(0), fitted_on="validation patients")
    assert rule.kind == "consecutive" and set(rule.compared) == {"consecutive", "max", "top_2_mean", "top_3_mean"}
    assert rule.compared["consecutive"]["youden_j"] > rule.compared["max"]["youden_j"]
    assert "validation patients (40 series, 20 positive" in rule.fitted_on
    test = series_metrics(_truths(1), rule)  # fresh series: the rule carries over
    assert test["n"] == 40 and test["auc"] > 0.95 and test["sensitivity"] >= 0.9 and test["specificity"] >= 0.9


def test_series_come_from_patients_in_slice_order_with_their_truth():
    from asinfer.trainer.data import Record
    from asinfer.trainer.series import series_from_slices

    records = [Record(Path(f"/d/P1_s{i}.png"), int(i == 1), "P1", slice_index=i, series_label=0) for i in (2, 0, 1)]
    records += [Record(Path("/d/P2_s0.png"), 1, "P2")]
    (first, second) = series_from_slices(records, np.array([0, 1, 2, 3]), np.array([0.2, 0.0, 0.1, 0.9]))
    assert first.probs == (0.0, 0.1, 0.2) and first.label == 0  # the CSV's series truth wins over slice labels
    assert second.label == 1 and second.probs == (0.9,)


def _split(truths):
    """Per-slice arrays of a list of SeriesTruth: a slice is positive where its probability is high."""
    probs = np.concatenate([np.array(s.probs) for s in truths])
    patient = np.concatenate([[k] * len(s.probs) for k, s in enumerate(truths)])
    labels = np.concatenate([(np.array(s.probs) > 0.5) & bool(s.label) for s in truths]).astype(int)
    return {"labels": labels, "probs": probs, "patient": patient, "series": truths}


def test_threshold_stability_resamples_patients_and_measures_test_rates_at_each_refit():
    from asinfer.trainer.series import fit_series_rule, threshold_stability

    validation, test = _split(_truths(0)), _split(_truths(1))
    rule = fit_series_rule(validation["series"])
    result = threshold_stability(validation, test, 0.5, rule, reps=50)
    assert result["reps"] == 50 and result["validation_patients"] == 40
    lo, hi = result["series_threshold"]["interval_95"]
    assert lo <= result["series_threshold"]["median"] <= hi and result["series_threshold"]["kind"] == "consecutive"
    assert abs(sum(result["series_rule_chosen"].values()) - 1.0) < 1e-6
    # Clean synthetic scores: every refit keeps the test series right.
    assert result["test_series_at_refits"]["sensitivity"]["interval_95"][0] >= 0.9
    # Noisy scores: the refitted slice threshold wanders and the interval says so.
    rng = np.random.default_rng(3)
    noisy = dict(validation, probs=np.clip(validation["probs"] + rng.normal(0, 0.25, validation["probs"].size), 0, 1))
    wide = threshold_stability(noisy, None, 0.5, rule, reps=50)["slice_threshold"]["interval_95"]
    tight = result["slice_threshold"]["interval_95"]
    assert wide[1] - wide[0] > tight[1] - tight[0] and "test_slice_at_refits" not in threshold_stability(
        noisy, None, 0.5, rule, reps=5)


def test_threshold_stability_reaches_the_model_card(tiny_bundle, tmp_path):
    from dataclasses import replace

    from asinfer.engine.bundle import read_manifest, write_manifest
    from asinfer.trainer.card import write_card
    from asinfer.trainer.series import fit_series_rule, threshold_stability

    validation, test = _split(_truths(0)), _split(_truths(1))
    rule = fit_series_rule(validation["series"])
    result = threshold_stability(validation, test, 0.5, rule, reps=20)
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    manifest = read_manifest(bundle / "manifest.json")
    write_manifest(bundle, replace(manifest, metrics={**manifest.metrics, "threshold_stability": result}))
    text = write_card(bundle).read_text()
    low, high = result["slice_threshold"]["interval_95"]
    assert "## Threshold stability (20 bootstrap draws of the 40 validation patients" in text
    assert f"| slice | 0.5 | {result['slice_threshold']['median']} | {low}-{high} |" in text
    assert "Test series sensitivity at the refitted thresholds" in text and low <= high


def _spikes(seed: int, n: int = 60):
    """Series of 8 slices: a positive has one bright slice anywhere, so the max rule is the right one."""
    from asinfer.trainer.series import SeriesTruth

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        probs = rng.uniform(0.0, 0.5, 8)
        if k % 2:
            probs[rng.integers(0, 8)] = rng.uniform(0.45, 0.95)
        out.append(SeriesTruth(f"P{k}", k % 2, tuple(float(p) for p in probs)))
    return out


def test_the_rule_is_chosen_out_of_bag_not_by_the_extra_threshold_of_the_consecutive_rule():
    from asinfer.trainer.series import fit_series_rule, series_metrics

    validation, fresh = _spikes(0), _spikes(100, 400)
    in_sample = fit_series_rule(validation, draws=0)
    rule = fit_series_rule(validation)
    # In sample, the consecutive rule's single-slice threshold lets it tie the max rule's J (ties went to it) ...
    assert in_sample.kind == "consecutive" and "in-sample J" in in_sample.fitted_on
    assert in_sample.compared["consecutive"]["youden_j"] >= in_sample.compared["max"]["youden_j"]
    # ... out of bag it is worse, and the max rule is kept, with what decided it recorded.
    assert rule.kind == "max" and "out-of-bag J over 200 draws" in rule.fitted_on
    assert rule.compared["max"]["out_of_bag_j"] > rule.compared["consecutive"]["out_of_bag_j"]
    new, old = series_metrics(fresh, rule), series_metrics(fresh, in_sample)
    assert new["auc"] > old["auc"] + 0.2
    assert new["sensitivity"] + new["specificity"] >= old["sensitivity"] + old["specificity"]


def test_rules_tied_out_of_bag_go_to_the_best_ranking_score():
    import importlib

    fitting = importlib.import_module("asinfer.trainer.series")
    series = _truths(0, n=60)
    rule = fitting.fit_series_rule(series)
    labels = np.array([s.label for s in series])
    scored = [fitting._scores(base, series) for _, base in fitting.CANDIDATES]
    mean, tied = fitting._out_of_bag_j(scored, labels, None, 200)
    names = [name for name, _ in fitting.CANDIDATES]
    assert tied[int(np.argmax(mean))]
    best_auc = max((rule.compared[n]["auc"], -k) for k, n in enumerate(names) if tied[k])
    assert rule.fitted_on.endswith(f"chosen: {names[-best_auc[1]]} (out-of-bag J over 200 draws, ties within one SE by AUC)")
    # The same draws give the same choice: the bootstrap is seeded.
    assert fitting.fit_series_rule(series).compared == rule.compared
