"""Gates for CI: hard accuracy parity against Keras, and speed ratios between rows of one run.

Pure functions over rows (anything with ``format``, ``status``, ``reason``,
``parity`` and ``tolerance`` attributes), so tests can feed them made-up rows.

Speed rules read ``NUM/DEN>=LIMIT``: the img/s of row NUM divided by the
img/s of row DEN, both from the same run, at the gate batch size (batch 8
when measured, else the largest batch measured; pipeline rows have one figure).
"""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
GATE_BATCH = 8  # the batch size speed ratios are taken at when it was measured
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


@dataclass(frozen=True)
class Gate:
    """The verdict on one gate; ``passed`` None means it could not be checked and does not fail the run."""

    name: str
    kind: str  # "accuracy" | "speed"
    passed: bool | None
    value: float | None
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def parse_rule(text: str, names: Iterable[str]) -> Rule:
    """Parse ``NUM/DEN>=LIMIT``; ``names`` are the valid row names.

    Raises:
        ValueError: the rule is malformed, names an unknown row, or has a limit <= 0.
    """
    from asinfer.engine._formats import _unknown

    match = _RULE.match(text)
    if match is None:
        raise ValueError(f"invalid --fail-under rule {text!r}: {_RULE_HELP}; operators: {', '.join(OPS)}")
    valid = list(names)
    for name in (match["num"], match["den"]):
        if name not in valid:
            raise ValueError(f"in --fail-under rule {text!r}: {_unknown('row', name, valid)}")
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
        return Gate(str(rule), "speed", False, None, f"cannot evaluate, no img/s for {reasons}")
    ratio = num / den
    passed = OPS[rule.op](ratio, rule.limit)
    detail = f"{rule.numerator} {num:.4g} img/s / {rule.denominator} {den:.4g} img/s = {ratio:.3g}x"
    return Gate(str(rule), "speed", passed, ratio, f"{detail} ({'ok' if passed else 'FAILS'} {rule.op} {rule.limit:g})")


def accuracy_gates(rows: Iterable, reference: str | None = "keras") -> list[Gate]:
    """Parity of every measured row against the reference, within its format's tolerance.

    A failed row fails its gate (its accuracy is unknown); skipped rows and
    the reference itself are not gated; without a measured reference (None:
    no format fit to be one ran) the gates are reported as not checked.
    """
    rows = list(rows)
    ref = next((r for r in rows if r.format == reference), None)
    ref_ok = ref is not None and ref.status == "ok"
    reference = reference or "a reference format (Keras, fp32 or fp16)"
    gates = []
    for row in rows:
        if row.format == reference or row.status == "skipped":
            continue
        if row.status != "ok":
            gates.append(Gate(f"{row.format} parity", "accuracy", False, None, f"{row.format} failed: {row.reason}"))
        elif not ref_ok or not row.parity.get("n"):
            why = ref.reason if ref is not None and ref.reason else f"{reference} not benchmarked"
            gates.append(Gate(f"{row.format} parity", "accuracy", None, None, f"not checked: {why}"))
        else:
            gates.append(parity_gate(row.format, row.parity, row.tolerance))
    return gates


def parity_gate(fmt: str, measured: dict, tolerance) -> Gate:
    """One row's parity numbers (``asinfer.trainer._parity.measure``) against its ``Tolerance``."""
    from asinfer.trainer._parity import _verdict

    limits = {field: limit for field, limit in asdict(tolerance).items() if limit is not None}
    verdicts = [_verdict(field, limit, measured) for field, limit in limits.items()]
    passed = all(ok for ok, _ in verdicts)
    detail = "; ".join(text for _, text in verdicts) or "no tolerance defined"
    return Gate(f"{fmt} parity", "accuracy", passed, measured.get("agreement"), f"{detail} (n={measured['n']})")


def failed(gates: Iterable[Gate]) -> list[Gate]:
    """The gates that fail the run."""
    return [g for g in gates if g.passed is False]
