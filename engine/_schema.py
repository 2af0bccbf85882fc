"""Strict construction of frozen dataclasses from parsed JSON, checking every field's type.

The manifest, the parity records inside it and the bench report are read
with :func:`build_dataclass`: a string where a number belongs (``"threshold": "0.5"``),
a string where a pair belongs (``"labels": "ab"``) or a field nobody defined
is a :class:`SchemaError` naming the field path, never a ``TypeError`` later.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union

MAX_DEPTH = 32  # free-form records (training history, metrics) deeper than this are refused


class SchemaError(ValueError):
    """A JSON value that does not fit the field it is read into."""


def build_dataclass(cls: type, value: Any, where: str = "") -> Any:
    """Construct dataclass ``cls`` from ``value`` (a dict from ``json.loads``).

    Raises:
        SchemaError: naming the field (``input.height``) and what it should be.
    """
    if not isinstance(value, dict):
        raise SchemaError(f"{where or cls.__name__}: expected an object, got {_kind(value)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise SchemaError(f"{where or cls.__name__}: unknown field(s) {unknown}; valid: {sorted(known)}")
    kwargs = {name: convert(hints[name], item, _join(where, name)) for name, item in value.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise SchemaError(f"{where or cls.__name__}: {exc}") from None


def convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against the type ``hint`` (and converted: lists to tuples, dicts to dataclasses)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        _check_depth(value, where)
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return convert(options[0] if len(options) == 1 else Any, value, where)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if origin is tuple:
        return _tuple(args, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {_kind(value)}")
        return {_key(k, where): convert(args[1], v, _join(where, str(k))) for k, v in value.items()}
    return _scalar(hint, value, where)


def _tuple(args: tuple, value: Any, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise SchemaError(f"{where}: expected a list, got {_kind(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise SchemaError(f"{where}: expected a list of {len(args)}, got {len(value)} item(s)")
    return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _scalar(hint: type, value: Any, where: str) -> Any:
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{where}: expected a number, got {_kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise SchemaError(f"{where}: expected a finite number, got {str(value)[:40]}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"{where}: expected an integer, got {_kind(value)}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise SchemaError(f"{where}: expected {'a string' if hint is str else 'true or false'}, "
                              f"got {_kind(value)}")
        return value
    raise TypeError(f"schema: unsupported field type {hint!r} at {where}")  # a bug in a dataclass, not input


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise SchemaError(f"{where}: keys must be strings")
    return key


def _check_depth(value: Any, where: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise SchemaError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for v in value.values():
            _check_depth(v, where, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_depth(v, where, depth + 1)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, (int, float)):
        return f"the number {str(value)[:40]}"
    return {dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def to_json_data(obj: Any) -> Any:
    """Dataclasses (and their properties left out) as plain JSON data: tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_json_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_data(v) for v in obj]
    return obj
