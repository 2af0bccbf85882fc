"""Gates for CI: accuracy parity (always on) and speed ratios between rows of one run.

Pure functions over rows (anything with ``format``, ``status``, ``reason``,
``speed_only`` and ``parity`` attributes), so tests can feed them made-up rows.

Accuracy: each format's :class:`~asinfer.engine.bundle.ParityRecord` against
the reference is judged by ``FORMATS[format].tolerance.judge``, the same judge
the converter uses; the :class:`~asinfer.engine.bundle.Verdict`'s summary is
the gate's detail.

Speed rules read ``NUM/DEN>=LIMIT``: the img/s of row NUM divided by the
img/s of row DEN, both from the same run, at the gate batch size (batch 8
when measured, else the largest batch measured; pipeline rows have one figure).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from asinfer.engine import FORMATS, invalid_choice
from asinfer.engine.bundle import ParityRecord

from .report import ACCURACY, FAILED, OK, SKIPPED, SPEED, Gate

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
GATE_BATCH = 8  # the batch size speed ratios are taken at when it was measured
# Parity reference, most exact first: Keras when the model has it (a run folder), else the closest stand-in
# (the shipped bundle has no Keras model; its onnx-fp16 matched Keras to 1e-3 at conversion).
REFERENCES = ("keras", "onnx-fp32", "tflite-fp32", "onnx-fp16", "tflite-fp16")
_RULE = re.compile(r"^\s*(?P<num>[\w.-]+)\s*/\s*(?P<den>[\w.-]+)\s*(?P<op>>=|<=|>|<)\s*(?P<limit>\d+(?:\.\d*)?|\.\d+)\s*$")
_RULE_HELP = "write NUM/DEN>=LIMIT with row names, e.g. 'onnx-int8/keras>=3.0'"


@dataclass(frozen=True)
class Rule:
    """A speed rule: img/s of ``numerator`` over img/s of ``denominator``, compared with ``limit``."""

    numerator: str
    denominator: str
    op: str  # a key of OPS
    limit: float

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}{self.op}{self.limit:g}"


def parse_rule(text: str, names: Iterable[str]) -> Rule:
    """Parse ``NUM/DEN>=LIMIT``; ``names`` are the valid row names.

    Raises:
        ValueError: the rule is malformed, names an unknown row, or has a limit <= 0.
    """
    match = _RULE.match(text)
    if match is None:
        raise ValueError(f"invalid --fail-under rule {text!r}: {_RULE_HELP}; operators: {', '.join(OPS)}")
    valid = list(names)
    for name in (match["num"], match["den"]):
        if name not in valid:
            raise ValueError(f"in --fail-under rule {text!r}: {invalid_choice('row', name, valid)}")
    limit = float(match["limit"])
    if limit <= 0:
        raise ValueError(f"in --fail-under rule {text!r}: the limit must be > 0, got {limit:g}")
    return Rule(match["num"], match["den"], match["op"], limit)


def gate_batch(batch_sizes: Sequence[int]) -> int:
    """The batch size speed gates compare at: 8 when measured, else the largest measured."""
    return GATE_BATCH if GATE_BATCH in batch_sizes else max(batch_sizes)


def speed_gate(rule: Rule, throughput: dict[str, float | None], why: dict[str, str]) -> Gate:
    """Judge ``rule`` on img/s per row name; a row without a figure fails the gate, saying why."""
    num, den = throughput.get(rule.numerator), throughput.get(rule.denominator)
    missing = [n for n, v in ((rule.numerator, num), (rule.denominator, den)) if not v]
    if missing:
        reasons = "; ".join(f"{n}: {why.get(n) or 'not measured'}" for n in missing)
        return Gate(str(rule), SPEED, False, None, f"cannot evaluate, no img/s for {reasons}")
    ratio = num / den
    passed = OPS[rule.op](ratio, rule.limit)
    detail = f"{rule.numerator} {num:.4g} img/s / {rule.denominator} {den:.4g} img/s = {ratio:.3g}x"
    return Gate(str(rule), SPEED, passed, ratio, f"{detail} ({'ok' if passed else 'FAILS'} {rule.op} {rule.limit:g})")


def choose_reference(measured: Iterable[str]) -> str | None:
    """The parity reference among the formats whose accuracy was measured: the first of :data:`REFERENCES`."""
    have = set(measured)
    return next((name for name in REFERENCES if name in have), None)


def judged(fmt: str, record: ParityRecord) -> ParityRecord:
    """``record`` with its verdict from ``FORMATS[fmt].tolerance``."""
    return replace(record, verdict=FORMATS[fmt].tolerance.judge(record))


def accuracy_gates(rows: Iterable, reference: str | None) -> list[Gate]:
    """Parity of every measured row against ``reference``, within its format's tolerance.

    A failed row fails its gate (its accuracy is unknown). Skipped rows, the
    reference itself and speed-only rows (a Keras stand-in with random
    weights) are not gated. Without a reference (None: no format fit to be
    one ran) the gates are reported as not checked, saying why.
    """
    rows = list(rows)
    gates = []
    for row in rows:
        if row.format == reference or row.status == SKIPPED or row.speed_only:
            continue
        if row.status != OK:
            gates.append(Gate(f"{row.format} parity", ACCURACY, False, None, f"{row.format} failed: {row.reason}"))
        elif row.parity is None:
            gates.append(Gate(f"{row.format} parity", ACCURACY, None, None, f"not checked: {_no_reference(rows)}"))
        else:
            gates.append(parity_gate(row.format, row.parity))
    return gates


def parity_gate(fmt: str, record: ParityRecord) -> Gate:
    """One format's parity record judged by its tolerance (``FORMATS[fmt].tolerance.judge``)."""
    verdict = FORMATS[fmt].tolerance.judge(record)
    detail = f"{verdict.summary()} (n={verdict.n}, against {record.reference})"
    return Gate(f"{fmt} parity", ACCURACY, verdict.passed, record.agreement, detail)


def _no_reference(rows: list) -> str:
    """Why no reference ran: each candidate row's status and reason."""
    why = [f"{r.format} {'speed only' if r.status == OK and r.speed_only else r.status}" + (f" ({r.reason})" if r.reason else "")
           for r in rows if r.format in REFERENCES and (r.status in (SKIPPED, FAILED) or r.speed_only)]
    return "no reference format ran" + (f": {'; '.join(why)}" if why else f" (one of {', '.join(REFERENCES)})")


def failed(gates: Iterable[Gate]) -> list[Gate]:
    """The gates that fail the run."""
    return [g for g in gates if g.passed is False]
