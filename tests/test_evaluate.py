"""The per-condition evaluation: exports, targets, intervals, and the card's table."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from asinfer import engine
from asinfer.trainer.evaluate import CONDITIONS, TARGETS, Condition, evaluate, judge, record


def test_exports_store_the_values_as_such_files_would():
    from asinfer.trainer import evaluate as ev

    image = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    series = SimpleNamespace(images=image[None], window=(2048.0, 4096.0), photometric="MONOCHROME2")
    low = ev._frame(series, 0, "8bit-unwindowed", "x")
    assert low.pixels.dtype == np.uint8 and low.window is None and low.pixels.max() == 255 and low.pixels[0, 1] == 1
    deep = ev._frame(series, 0, "16bit", "x")
    assert deep.pixels.dtype == np.uint16 and deep.window == (2048.0 * 16, 4096.0 * 16)
    same = engine.to_uint8(ev._frame(series, 0, None, "x")).astype(int)
    assert np.abs(engine.to_uint8(deep).astype(int) - same).max() <= 1  # the window's -0.5 terms do not scale
    burned = ev._frame(series, 0, "8bit-windowed", "x")
    assert burned.window is None and burned.pixels.dtype == np.uint8 and burned.pixels.max() >= 250
    with pytest.raises(ValueError, match="unknown export"):
        ev._frame(series, 0, "4bit", "x")


def test_a_monochrome1_series_reaches_the_engine_as_its_file_would():
    from asinfer.trainer import evaluate as ev

    display = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    series = SimpleNamespace(images=display[None], window=(2048.0, 4096.0), stored_window=(2047.0, 4096.0),
                             photometric="MONOCHROME1", stored=lambda i: (4095 - display).astype(np.uint16))
    frame = ev._frame(series, 0, None, "x")
    assert frame.invert and frame.window == (2047.0, 4096.0) and frame.pixels[0, 0] == 4095
    plain = ev._frame(SimpleNamespace(images=display[None], window=(2048.0, 4096.0), photometric="MONOCHROME2"),
                      0, None, "x")
    assert np.abs(engine.to_uint8(frame).astype(int) - engine.to_uint8(plain).astype(int)).max() <= 1
    with pytest.raises(ValueError, match="MONOCHROME2"):
        ev._frame(series, 0, "16bit", "x")


def test_targets_take_the_worst_condition_and_can_fail():
    rows = [{"name": "a", "group": "in-distribution", "slice": {"auc": 0.97}, "series": {"auc": 0.99},
             "flip_changed": 0.01, "agreement": 0.995},
            {"name": "b", "group": "in-distribution", "slice": {"auc": 0.95}, "series": {"auc": 0.98},
             "flip_changed": 0.05, "agreement": None}]
    verdicts = {t["target"]: t for t in judge(rows)}
    in_dist = verdicts["slice AUC in distribution"]
    assert (in_dist["worst"], in_dist["where"], in_dist["met"]) == (0.95, "b", False)
    assert verdicts["labels changed by a left-right flip"]["met"] is False
    assert verdicts["int8 agreement with Keras"]["met"] is True  # the one measured value
    assert verdicts["slice AUC on the independent source"]["met"] is None  # not measured is not passed


def test_every_condition_names_a_known_group_and_unique_seed():
    assert len({c.seed for c in CONDITIONS}) == len(CONDITIONS)
    groups = {g for _, gs, *_ in TARGETS if gs for g in gs}
    assert {c.group for c in CONDITIONS} <= groups


def test_evaluate_reports_intervals_flips_and_records_into_the_card(tiny_bundle, tmp_path):
    conditions = (Condition("small", "in-distribution", generator={"size": 96}, seed=11),
                  Condition("small 8-bit", "bit depth", generator={"size": 96, "profile": "default"},
                            export="8bit-unwindowed", seed=12))
    result = evaluate(tiny_bundle, patients=4, conditions=conditions, progress=lambda _: None)
    assert [r["name"] for r in result["conditions"]] == ["small", "small 8-bit"]
    for row in result["conditions"]:
        assert row["slices"] == 4 * 12 and row["patients"] == 4
        auc, interval = row["slice"]["auc"], row["slice"]["auc_95"]
        if auc is not None and interval is not None:
            assert interval[0] <= auc <= interval[1]
        assert 0.0 <= row["flip_changed"] <= 1.0 and row["agreement"] is None
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    record(bundle, result)
    from asinfer.trainer.card import write_card

    text = write_card(bundle).read_text()
    assert "## Per condition" in text and "| small 8-bit | bit depth |" in text and "| target | limit |" in text
    assert "Drift targets and sampling" in text or result["drift_by_chance"] is None
    assert json.loads((bundle / "manifest.json").read_text())["metrics"]["conditions"]["patients"] == 4
    assert all(row["flip_changed_network"] is None for row in result["conditions"])  # no mirroring: the same
    for row in result["conditions"]:  # every lesion slice lands in one brightening bin
        bins = row["lesion_sensitivity"]
        assert sum(b["lesion_slices"] for b in bins) == row["positive_slices"]
    assert "Slice sensitivity by how much brighter a lesion is" in text and "| small 8-bit | " in text.split(
        "Slice sensitivity by how much brighter")[1]


def test_lesion_brightening_compares_the_lesion_with_a_band_around_it():
    from asinfer.trainer.evaluate import lesion_brightening, sensitivity_by_brightening

    image = np.full((32, 32), 100.0)
    mask = np.zeros((32, 32), bool)
    mask[12:20, 12:20] = True
    image[mask] = 180.0
    image[0:4, 0:4] = 1000.0  # far from the lesion: outside its band, so it changes nothing
    assert lesion_brightening(image, mask) == pytest.approx(0.8)
    assert lesion_brightening(image * 16, mask) == pytest.approx(0.8)  # a ratio: a deeper export keeps it
    assert np.isnan(lesion_brightening(image, np.zeros_like(mask)))
    assert np.isnan(lesion_brightening(image, np.ones_like(mask)))  # no surroundings to compare with
    brightening = np.array([np.nan, 0.1, 0.4, 0.5, 0.7, 2.0, np.nan])
    found = np.array([True, False, True, False, True, True, False])
    bins = sensitivity_by_brightening(brightening, found)
    assert [(b["brighter"], b["lesion_slices"], b["sensitivity"]) for b in bins] == [
        ("< 0.3", 1, 0.0), ("0.3-0.6", 2, 0.5), ("0.6-1", 1, 1.0), (">= 1", 1, 1.0)]


def test_a_mirror_averaged_bundle_changes_no_label_and_reports_the_network_alone(tmp_path):
    from asinfer.trainer.card import write_card
    from asinfer.trainer.tiny import write_tiny_bundle

    bundle = tmp_path / "mirrored"
    write_tiny_bundle(bundle, size=32, formats=("onnx-fp32",), mirror_average=True, bias=0.02)
    condition = Condition("small", "in-distribution", generator={"size": 96}, seed=11)
    result = evaluate(bundle, patients=4, conditions=(condition,), progress=lambda _: None)
    (row,) = result["conditions"]
    assert row["flip_changed"] == 0.0 and 0.0 <= row["flip_changed_network"] <= 1.0
    record(bundle, result)
    assert "the network alone changes" in write_card(bundle).read_text()


def test_drift_by_chance_is_the_exact_binomial_chance_of_passing():
    from asinfer.trainer.evaluate import drift_by_chance

    half = {"confusion_matrix": {"tp": 1, "fn": 1, "tn": 1, "fp": 1}}
    metrics = {"validation": half, "series_validation": half}
    row = {"slices": 4, "positive_slices": 2, "patients": 4}  # 2 positive and 2 negative at both levels
    # One rate: two draws of Bin(2, 1/2) agree with probability 1/16 + 1/4 + 1/16; both rates: its square.
    one = drift_by_chance(metrics, [row])
    assert one["slice"]["one_condition_median"] == pytest.approx(0.375 ** 2, abs=1e-4)
    # Two conditions share the validation draw: sum over it of P(pass | it)^2, per rate.
    two = drift_by_chance(metrics, [row, row])
    assert two["series"]["every_condition"] == pytest.approx((0.25 * 0.0625 * 2 + 0.5 * 0.25) ** 2, rel=1e-3)
    # Against a simulation at realistic sizes.
    metrics = {"validation": {"confusion_matrix": {"tp": 228, "fn": 28, "tn": 1001, "fp": 39}},
               "series_validation": {"confusion_matrix": {"tp": 62, "fn": 3, "tn": 41, "fp": 2}}}
    row = {"slices": 480, "positive_slices": 90, "patients": 40}
    exact = drift_by_chance(metrics, [row])["series"]["one_condition_median"]
    rng = np.random.default_rng(1)
    simulated = 1.0
    for n_val, hits, n in ((65, 62, 20), (43, 41, 20)):
        p = hits / n_val
        simulated *= np.mean(np.abs(rng.binomial(n_val, p, 200_000) / n_val - rng.binomial(n, p, 200_000) / n) <= 0.05 + 1e-9)  # within: the limit passes
    assert exact == pytest.approx(simulated, abs=0.01)
    # A rate of exactly one passes whatever the sizes; no validation counts, no answer.
    perfect = {"confusion_matrix": {"tp": 10, "fn": 0, "tn": 10, "fp": 0}}
    assert drift_by_chance({"validation": perfect, "series_validation": perfect}, [row])["series"] == {
        "one_condition_median": 1.0, "every_condition": 1.0}
    assert drift_by_chance({}, [row]) is None


def test_compare_pairs_two_bundles_on_the_same_phantoms(tmp_path):
    from asinfer.trainer.evaluate import compare, main
    from asinfer.trainer.tiny import write_tiny_bundle

    base, other = tmp_path / "base", tmp_path / "other"  # two input sizes, two sets of weights
    write_tiny_bundle(base, size=32, formats=("onnx-fp32",))
    write_tiny_bundle(other, size=48, formats=("onnx-fp32",), seed=3, bias=0.05)
    conditions = (Condition("small", "in-distribution", generator={"size": 96}, seed=11),)
    result = compare(other, base, patients=6, conditions=conditions, progress=lambda _: None)
    (row,) = result["conditions"]
    alone = {b: evaluate(b, patients=6, conditions=conditions, progress=lambda _: None)["conditions"][0]
             for b in (other, base)}
    for level in ("slice", "series"):  # each side is what evaluate measures on the same phantoms
        assert row[level]["auc"] == alone[other][level]["auc"]
        assert row[level]["base_auc"] == alone[base][level]["auc"]
        low, high = row[level]["difference_95"]
        assert row[level]["difference"] == pytest.approx(row[level]["auc"] - row[level]["base_auc"], abs=2e-4)
        assert low <= row[level]["difference"] <= high
    assert row["slice"]["difference"] != 0.0 and row["series"]["difference"] != 0.0  # the models differ
    (same,) = compare(base, base, patients=6, conditions=conditions, progress=lambda _: None)[
        "conditions"]
    assert same["slice"]["difference"] == 0.0 and same["slice"]["difference_95"] == [0.0, 0.0]
    with pytest.raises(SystemExit):
        main([str(other), "--against", str(base), "--record"])
