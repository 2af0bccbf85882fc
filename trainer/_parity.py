"""Parity of a converted model against its Keras reference, judged by the format's tolerance."""

from __future__ import annotations

import operator
from dataclasses import asdict

import numpy as np

from asinfer.engine._formats import Tolerance


class ParityError(ValueError):
    """A converted model strays from the Keras reference beyond its format's tolerance."""


# Tolerance field -> (measured key, passes(value, limit), how a pass reads).
_CHECKS = {
    "max_abs_dp": ("max_abs_dp", operator.le, "<="),
    "min_agreement": ("agreement", operator.ge, ">="),
    "max_abs_dauc": ("abs_dauc", operator.le, "<="),
}


def measure(reference: np.ndarray, predicted: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """Parity numbers of ``predicted`` against ``reference`` probabilities on labelled slices.

    AUC needs both classes; with one class ``auc``, ``auc_keras``, ``dauc`` and
    ``abs_dauc`` are None and the AUC limit is not applied.
    """
    reference, predicted = np.ravel(reference).astype(np.float64), np.ravel(predicted).astype(np.float64)
    if reference.shape != predicted.shape:
        raise ValueError(f"{predicted.size} predictions for {reference.size} reference slices")
    dp = np.abs(predicted - reference)
    auc, auc_ref = _auc(labels, predicted), _auc(labels, reference)
    dauc = None if auc is None else auc - auc_ref
    return {
        "n": int(reference.size),
        "threshold": float(threshold),
        "max_abs_dp": float(dp.max()),
        "mean_abs_dp": float(dp.mean()),
        "agreement": float(np.mean((predicted >= threshold) == (reference >= threshold))),
        "auc": auc,
        "auc_keras": auc_ref,
        "dauc": dauc,
        "abs_dauc": None if dauc is None else abs(dauc),
    }


def check(fmt: str, measured: dict, tolerance: Tolerance) -> dict:
    """``measured`` plus ``passed`` and ``tolerance``.

    Raises:
        ParityError: a number is outside its limit; the message names the
            format and every number against its limit.
    """
    verdicts = [_verdict(field, limit, measured) for field, limit in asdict(tolerance).items() if limit is not None]
    passed = all(ok for ok, _ in verdicts)
    if not passed:
        lines = "; ".join(text for _, text in verdicts)
        raise ParityError(f"{fmt} is outside its parity tolerance against Keras on {measured['n']} held-out "
                          f"slices: {lines}. The converted file is not recorded in the manifest; check the "
                          f"conversion settings (or the tolerance in engine._formats.FORMATS).")
    return {**measured, "passed": True, "tolerance": asdict(tolerance)}


def _verdict(field: str, limit: float, measured: dict) -> tuple[bool, str]:
    key, passes, sign = _CHECKS[field]
    value = measured[key]
    if value is None:  # AUC undefined on a one-class holdout
        return True, f"{key} n/a (one class) vs {field} {limit:g}"
    ok = passes(value, limit)
    return ok, f"{key} {value:.6g} {'ok' if ok else 'FAILS'} {sign} {limit:g}"


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    labels = np.ravel(labels)
    if np.unique(labels).size < 2:
        return None
    return float(roc_auc_score(labels, scores))
