"""Tolerances a user sets instead of editing the format table, and the message when a format fails one."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Iterable, Mapping

from asinfer.engine import FORMATS, Tolerance, invalid_choice
from asinfer.engine.bundle import ParityRecord

OPTION = "--tolerance"
SYNTAX = "FORMAT:FIELD=VALUE[,FIELD=VALUE...]"
EXAMPLE = "onnx-int8:min_agreement=0.98,max_abs_dauc=0.02"
FIELDS = tuple(f.name for f in fields(Tolerance))
_UNSET = ("none", "off")  # a value that removes the limit

# Tolerance field -> the measured quantity its Check names.
_MEASURED = {"max_abs_dp": "max_abs_dp", "min_agreement": "agreement", "max_abs_dauc": "abs_dauc"}


def parse_tolerances(texts: Iterable[str]) -> dict[str, Tolerance]:
    """Tolerances from ``--tolerance`` values, each ``FORMAT:FIELD=VALUE[,FIELD=VALUE...]``.

    Each format starts from its tolerance in :data:`asinfer.engine.FORMATS`;
    the fields named replace its limits (``none`` removes one), the others
    stay. A format given twice takes both, the later value winning.

    Args:
        texts: e.g. ``["onnx-int8:min_agreement=0.98,max_abs_dauc=0.02"]``.

    Returns:
        format name -> the tolerance to judge it by.

    Raises:
        ValueError: bad syntax, an unknown format or field (with the valid
            ones and a close match), or a value that is not a limit.

    Example:
        >>> parse_tolerances(["onnx-int8:max_abs_dauc=0.02"])["onnx-int8"]
        Tolerance(max_abs_dp=None, min_agreement=0.99, max_abs_dauc=0.02)
    """
    found: dict[str, Tolerance] = {}
    for text in texts:
        fmt, limits = _split(text)
        found[fmt] = replace(found.get(fmt, FORMATS[fmt].tolerance), **limits)
    return found


def _split(text: str) -> tuple[str, dict[str, float | None]]:
    """``FORMAT:FIELD=VALUE,...`` -> (format, {field: limit}), validated."""
    fmt, sep, body = text.partition(":")
    fmt = fmt.strip()
    if not sep or not body.strip():
        raise ValueError(f"{OPTION} {text!r} must read {SYNTAX}, e.g. {EXAMPLE}")
    if fmt not in FORMATS or fmt == "keras":
        raise ValueError(f"{OPTION} {text!r}: " + invalid_choice("format", fmt, [f for f in FORMATS if f != "keras"]))
    limits = {}
    for item in body.split(","):
        name, eq, value = (part.strip() for part in item.partition("="))
        if name not in FIELDS:
            raise ValueError(f"{OPTION} {text!r}: " + invalid_choice("tolerance field", name, FIELDS))
        if not eq:
            raise ValueError(f"{OPTION} {text!r}: {name} needs a value ({name}=VALUE, or {name}=none)")
        limits[name] = _limit(text, name, value)
    return fmt, limits


def _limit(text: str, name: str, value: str) -> float | None:
    """A limit: a number in [0, 1] (all three are probabilities or shares), or None for ``none``."""
    if value.lower() in _UNSET:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{OPTION} {text!r}: {name}={value!r} must be a number from 0 to 1, or none")
    return number


def resolve(targets: Iterable[str], given: Mapping[str, Tolerance] | None) -> dict[str, Tolerance]:
    """The tolerance for each target: ``given``'s, else the format table's.

    Raises:
        ValueError: ``given`` names a format that is not converted, or holds something other than a Tolerance.
    """
    targets = list(targets)
    given = dict(given or {})
    for fmt, tolerance in given.items():
        if fmt not in targets:
            raise ValueError(f"a tolerance is given for {fmt!r}, which is not converted here; converted: "
                             f"{', '.join(targets)}")
        if not isinstance(tolerance, Tolerance):
            raise ValueError(f"tolerances[{fmt!r}] must be an asinfer.engine.Tolerance, got {type(tolerance).__name__}")
    return {fmt: given.get(fmt, FORMATS[fmt].tolerance) for fmt in targets}


def failure_message(fmt: str, record: ParityRecord) -> str:
    """Why ``fmt`` failed, with its numbers, and the option that accepts it if the difference is acceptable."""
    verdict = record.verdict
    failing = [c for c in verdict.checks if not c.passed]
    source = record.settings.get("parity_data", "the parity slices")
    option = f"{fmt}:" + ",".join(f"{_field(c.name)}={_looser(c.name, c.value)}" for c in failing)
    return (f"{fmt} is outside its parity tolerance against {record.reference} on {record.n} slices of {source}: "
            f"{verdict.summary()}. It was not written (its record stays in manifest.parity); the formats that "
            f"passed were. If this difference is acceptable for your use, set the limit: {OPTION} {option} "
            f"(Python: convert(..., tolerances={{{fmt!r}: Tolerance(...)}})).")


def _field(measured: str) -> str:
    """The Tolerance field that limits the measured quantity a Check names."""
    return next(name for name, key in _MEASURED.items() if key == measured)


def _looser(measured: str, value: float) -> str:
    """A limit the measured value meets, rounded outward to two significant digits."""
    if measured == "agreement":
        return f"{math.floor(value * 100) / 100:g}"
    digits = 1 - math.floor(math.log10(value)) if value > 0 else 0
    return f"{math.ceil(value * 10 ** digits) / 10 ** digits:g}"
