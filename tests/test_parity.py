"""The one parity judge: measure_parity, Tolerance.judge and the records that carry them in a manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asinfer.engine import FORMATS, Manifest
from asinfer.engine.bundle import ParityRecord, Tolerance, measure_parity, roc_auc

INT8 = FORMATS["onnx-int8"].tolerance


def test_roc_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + labels * 0.3, 1)  # rounding makes many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(np.ones(5), np.arange(5)) is None


def _pair_swapped(n_pos: int, n_neg: int):
    """Reference scores that rank perfectly, and a prediction that swaps exactly one positive-negative pair.

    The pair sits above the 0.3 threshold used below, so labels agree: only the ranking changes.
    """
    labels = np.r_[np.zeros(n_neg), np.ones(n_pos)].astype(int)
    ref = np.r_[np.linspace(0.1, 0.45, n_neg), np.linspace(0.46, 0.9, n_pos)]
    pred = ref.copy()
    pred[n_neg - 1], pred[n_neg] = ref[n_neg], ref[n_neg - 1]  # the top negative and the bottom positive trade places
    return ref, pred, labels


def test_one_swapped_pair_on_24_slices_is_noise_not_a_failure():
    """The new-user case: int8's dAUC of 0.0105 on 24 slices is one swapped pair of 5 x 19."""
    ref, pred, labels = _pair_swapped(5, 19)
    record = measure_parity(ref, pred, labels, threshold=0.3)
    assert record.dauc == pytest.approx(-1 / 95) and record.agreement == 1.0
    verdict = INT8.judge(record)
    dauc = next(c for c in verdict.checks if c.name == "abs_dauc")
    assert verdict.passed and dauc.outcome == "within noise" and dauc.interval[0] <= 0.01 < dauc.interval[1]


def test_clear_degradation_fails_even_on_few_slices():
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(12), np.ones(12)].astype(int)
    ref = np.r_[rng.uniform(0.0, 0.4, 12), rng.uniform(0.6, 1.0, 12)]
    noisy = rng.random(24)  # a broken conversion: unrelated to the reference
    verdict = INT8.judge(measure_parity(ref, noisy, labels, threshold=0.5))
    assert not verdict.passed
    assert any(c.outcome == "FAILS" for c in verdict.checks), verdict.summary()


@pytest.mark.parametrize("flips, outcome", [(0, "ok"), (1, "within noise"), (3, "FAILS")])
def test_agreement_fails_on_evidence_only(flips, outcome):
    ref = np.r_[np.full(12, 0.2), np.full(12, 0.8)]
    pred = ref.copy()
    pred[:flips] = 0.8  # these negatives cross the threshold
    labels = (ref > 0.5).astype(int)
    check = next(c for c in INT8.judge(measure_parity(ref, pred, labels, 0.5)).checks if c.name == "agreement")
    assert check.outcome == outcome, check.text()


def test_max_abs_dp_is_judged_as_measured():
    ref = np.linspace(0, 1, 50)
    labels = (ref > 0.5).astype(int)
    fp32 = FORMATS["onnx-fp32"].tolerance
    assert fp32.judge(measure_parity(ref, ref + 5e-5, labels, 0.5)).passed
    bad = fp32.judge(measure_parity(ref, ref + 2e-4, labels, 0.5))
    assert not bad.passed and "max_abs_dp 0.0002 FAILS <= 0.0001" in bad.summary()


def test_one_class_labels_leave_auc_unjudged():
    ref = np.linspace(0.1, 0.4, 20)
    verdict = INT8.judge(measure_parity(ref, ref, np.zeros(20), 0.5))
    assert verdict.passed and any(c.outcome == "n/a" for c in verdict.checks)


def test_records_travel_through_the_manifest_typed():
    ref, pred, labels = _pair_swapped(5, 19)
    record = measure_parity(ref, pred, labels, 0.3)
    judged = ParityRecord(**{**record.__dict__, "verdict": INT8.judge(record), "settings": {"reduce_range": False}})
    manifest = Manifest(name="m", version="1", parity={"onnx-int8": judged})
    again = Manifest.from_json(manifest.to_json())
    assert again.parity["onnx-int8"] == judged and again.parity["onnx-int8"].passed


def test_schema_1_parity_is_still_read():
    legacy = {"n": 324, "threshold": 0.17, "max_abs_dp": 0.02, "mean_abs_dp": 0.001, "agreement": 0.99,
              "auc": 0.91, "auc_keras": 0.915, "dauc": -0.005, "abs_dauc": 0.005, "passed": True,
              "tolerance": {"max_abs_dp": None, "min_agreement": 0.99, "max_abs_dauc": 0.01}, "settings": {"x": 1}}
    data = json.loads(Manifest(name="m", version="1").to_json())
    data.update(schema_version=1, parity={"onnx-int8": legacy})
    record = Manifest.from_dict(data).parity["onnx-int8"]
    assert record.reference == "keras" and record.auc_reference == 0.915 and record.passed is True
    assert record.settings == {"x": 1}


def test_tolerance_reports_only_the_limits_it_sets():
    assert Tolerance(max_abs_dp=1e-4).limits() == {"max_abs_dp": 1e-4}
    assert Tolerance().judge(measure_parity([0.1], [0.1], [0], 0.5)).summary() == "no tolerance defined"
