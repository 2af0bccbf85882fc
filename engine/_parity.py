"""Parity: how close a converted model stays to its reference, and the one judge of it.

``measure_parity`` compares two sets of probabilities on the same labelled
slices and returns a :class:`ParityRecord`; ``Tolerance.judge`` turns that
record into a :class:`Verdict`. The converter, ``asinfer bench`` and the
model card all use these two; nothing else decides whether a format passes.

Small datasets: label agreement and ΔAUC on a few dozen slices swing by a
whole slice or pair (one swapped pair of 5x19 is a ΔAUC of 0.0105). A
limit is therefore failed only when the data show it is exceeded: the point
estimate is outside the limit *and* its 95 % interval lies wholly outside
too (Wilson score interval for agreement, paired bootstrap over slices for
ΔAUC). A point estimate outside a limit whose interval still reaches it is
reported as ``within noise``: it passes, and the record says how many slices
it rests on. max |Δp| is a maximum, not an estimate, and is judged as it is.

numpy only: the engine may judge parity on a device without scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ._schema import build_dataclass

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
BOOTSTRAP_ROUNDS = 1000

# Check outcomes.
OK, NOISE, FAILS, NOT_APPLICABLE = "ok", "within noise", "FAILS", "n/a"


@dataclass(frozen=True)
class Check:
    """One limit of a tolerance against its measured value."""

    name: str  # the measured quantity: max_abs_dp | agreement | abs_dauc
    value: float | None
    limit: float
    op: str  # "<=" or ">=": how value must compare with limit
    outcome: str  # ok | within noise | FAILS | n/a
    interval: tuple[float, float] | None = None  # 95 % interval of the value, where it is an estimate

    @property
    def passed(self) -> bool:
        return self.outcome != FAILS

    def text(self) -> str:
        """E.g. ``agreement 0.9583 (95% 0.80-0.99) within noise >= 0.99``."""
        if self.value is None:
            return f"{self.name} n/a (one class) vs {self.op} {self.limit:g}"
        ci = f" (95% {self.interval[0]:.4g}..{self.interval[1]:.4g})" if self.interval else ""
        return f"{self.name} {self.value:.6g}{ci} {self.outcome} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class Verdict:
    """A tolerance's judgement of a :class:`ParityRecord`."""

    passed: bool
    checks: tuple[Check, ...] = ()
    n: int = 0  # slices the judgement rests on

    def summary(self) -> str:
        """The checks on one line, e.g. for a CLI or a gate detail."""
        return "; ".join(c.text() for c in self.checks) or "no tolerance defined"


@dataclass(frozen=True)
class ParityRecord:
    """What was measured: a format's probabilities against a reference's, on the same slices.

    ``verdict`` and ``settings`` are filled by whoever judged and made the
    format (the converter records how it converted); ``measure_parity``
    leaves them empty.
    """

    reference: str  # the format compared against: keras, or the most exact one present
    n: int  # slices compared
    threshold: float  # decision threshold the agreement is taken at
    max_abs_dp: float  # max |p - p_reference|
    mean_abs_dp: float
    agreement: float  # share of slices with the same label at the threshold
    auc: float | None = None  # None when the labels hold one class
    auc_reference: float | None = None
    dauc: float | None = None  # auc - auc_reference
    dauc_interval: tuple[float, float] | None = None  # 95 % paired bootstrap over slices
    agreement_interval: tuple[float, float] | None = None  # 95 % Wilson score interval
    verdict: Verdict | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def abs_dauc(self) -> float | None:
        return None if self.dauc is None else abs(self.dauc)

    @property
    def passed(self) -> bool | None:
        """The verdict, or None when it was not judged."""
        return None if self.verdict is None else self.verdict.passed


@dataclass(frozen=True)
class Tolerance:
    """How close a format must stay to its reference; :meth:`judge` applies it."""

    max_abs_dp: float | None = None  # max |p - p_reference| over the slices
    min_agreement: float | None = None  # share of identical labels at the threshold
    max_abs_dauc: float | None = None  # |AUC - AUC_reference|

    def judge(self, record: ParityRecord) -> Verdict:
        """The verdict on ``record``: each limit checked, failing only on evidence (module docstring)."""
        checks = []
        if self.max_abs_dp is not None:
            outcome = OK if record.max_abs_dp <= self.max_abs_dp else FAILS
            checks.append(Check("max_abs_dp", record.max_abs_dp, self.max_abs_dp, "<=", outcome))
        if self.min_agreement is not None:
            checks.append(_at_least("agreement", record.agreement, self.min_agreement, record.agreement_interval))
        if self.max_abs_dauc is not None:
            checks.append(_dauc_check(record, self.max_abs_dauc))
        return Verdict(all(c.passed for c in checks), tuple(checks), record.n)

    def limits(self) -> dict[str, float]:
        """The limits that are set, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def _at_least(name: str, value: float, limit: float, interval: tuple[float, float] | None) -> Check:
    if value >= limit:
        return Check(name, value, limit, ">=", OK, interval)
    reaches = interval is not None and interval[1] >= limit
    return Check(name, value, limit, ">=", NOISE if reaches else FAILS, interval)


def _dauc_check(record: ParityRecord, limit: float) -> Check:
    value = record.abs_dauc
    if value is None:
        return Check("abs_dauc", None, limit, "<=", NOT_APPLICABLE)
    interval = _abs_interval(record.dauc_interval)
    if value <= limit:
        return Check("abs_dauc", value, limit, "<=", OK, interval)
    reaches = interval is not None and interval[0] <= limit
    return Check("abs_dauc", value, limit, "<=", NOISE if reaches else FAILS, interval)


def _abs_interval(interval: tuple[float, float] | None) -> tuple[float, float] | None:
    """The interval of |x| from an interval of x: from 0 when it spans 0."""
    if interval is None:
        return None
    low, high = interval
    if low <= 0.0 <= high:
        return 0.0, max(-low, high)
    return min(abs(low), abs(high)), max(abs(low), abs(high))


def measure_parity(reference: np.ndarray, predicted: np.ndarray, labels: np.ndarray, threshold: float,
                   reference_name: str = "keras", rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> ParityRecord:
    """Compare ``predicted`` with ``reference`` probabilities on the same labelled slices.

    Args:
        reference, predicted: probabilities, one per slice, in the same order.
        labels: 0/1 truth per slice (AUC needs both classes, else AUC fields are None).
        threshold: the decision threshold labels are taken at.
        reference_name: the format ``reference`` came from.
        rounds: paired bootstrap resamples for the ΔAUC interval (0: none).
        seed: the bootstrap's seed; the same inputs give the same record.

    Raises:
        ValueError: the arrays differ in length or are empty.
    """
    ref = np.ravel(np.asarray(reference, np.float64))
    pred = np.ravel(np.asarray(predicted, np.float64))
    labels = np.ravel(np.asarray(labels)).astype(np.int64)
    if ref.shape != pred.shape or ref.shape != labels.shape or not ref.size:
        raise ValueError(f"parity needs one reference, prediction and label per slice: got {ref.size}, "
                         f"{pred.size} and {labels.size}")
    dp = np.abs(pred - ref)
    same = (pred >= threshold) == (ref >= threshold)
    auc, auc_ref = roc_auc(labels, pred), roc_auc(labels, ref)
    dauc = None if auc is None or auc_ref is None else auc - auc_ref
    return ParityRecord(
        reference=reference_name, n=int(ref.size), threshold=float(threshold),
        max_abs_dp=float(dp.max()), mean_abs_dp=float(dp.mean()), agreement=float(same.mean()),
        auc=auc, auc_reference=auc_ref, dauc=dauc,
        dauc_interval=None if dauc is None or rounds < 1 else _bootstrap_dauc(labels, pred, ref, rounds, seed),
        agreement_interval=wilson_interval(int(same.sum()), int(same.size)),
    )


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney, ties count one half); None when ``labels`` hold one class."""
    labels = np.ravel(labels).astype(bool)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if not positives or not negatives:
        return None
    _, inverse, counts = np.unique(np.ravel(scores), return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # 1-based rank of each value's last copy
    ranks = (upper - (counts - 1) / 2.0)[inverse]  # average rank of ties
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion; None for n = 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def _bootstrap_dauc(labels: np.ndarray, pred: np.ndarray, ref: np.ndarray, rounds: int,
                    seed: int) -> tuple[float, float] | None:
    """95 % percentile interval of AUC(pred) - AUC(ref), both on the same resampled slices.

    None when no resample held both classes (a handful of slices): there is no interval to give.
    """
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        pick = rng.integers(0, labels.size, labels.size)
        a, b = roc_auc(labels[pick], pred[pick]), roc_auc(labels[pick], ref[pick])
        if a is not None and b is not None:
            diffs.append(a - b)
    if not diffs:
        return None
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def record_from_dict(data: Any, where: str = "parity") -> ParityRecord:
    """A record from manifest JSON, schema-1 manifests included (``auc_keras``, ``passed``, ``tolerance``).

    Raises:
        SchemaError: a field of the wrong kind, named by its path.
    """
    if isinstance(data, dict) and "verdict" not in data and "passed" in data:  # schema 1
        verdict = {"passed": bool(data["passed"]), "n": data.get("n", 0)}
        data = {k: v for k, v in data.items() if k not in ("passed", "tolerance", "abs_dauc")}
        data["verdict"] = verdict
        if "auc_keras" in data:
            data["auc_reference"] = data.pop("auc_keras")
        data.setdefault("reference", "keras")
    return build_dataclass(ParityRecord, data, where)
