"""Checking and casting the values of config fields: the typed-field rules behind ``hm2bp.config``.

Every config error names its key as ``section.key`` (:class:`~hm2bp.errors.ConfigError`).
"""

from __future__ import annotations

import functools
import math
import typing
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from .errors import ConfigError

__all__ = ["cast_field", "check_choice", "check_positive", "check_types", "fail", "field_hints", "type_name"]


def _fail(section: str, key: str, problem: str) -> typing.NoReturn:
    raise ConfigError(f"{section}.{key}: {problem}")


def _check_choice(section: str, key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        _fail(section, key, f"must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def _check_positive(section: str, key: str, value: float, *, allow_zero: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        _fail(section, key, f"must be {'>= 0' if allow_zero else '> 0'}; got {value!r}")


# --------------------------------------------------------------------------------------------------
# Types and casting
# --------------------------------------------------------------------------------------------------
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # the hints of a class are fixed; get_type_hints costs ~1 ms per call
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    if tp == tuple[float, ...]:
        return "list of numbers"
    return getattr(tp, "__name__", str(tp))


def _check_types(obj: Any, section: str) -> None:
    """Check each field's value against its annotation (ints are accepted for floats and normalised)."""
    cls: type = type(obj)
    for f in fields(obj):
        tp = _hints(cls)[f.name]
        value = getattr(obj, f.name)
        ok: bool
        if tp is bool:
            ok = isinstance(value, bool)
        elif tp is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif tp is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                object.__setattr__(obj, f.name, float(value))
        elif tp is str:
            ok = isinstance(value, str)
        elif tp == tuple[float, ...]:
            ok = isinstance(value, (tuple, list)) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
            )
            if ok:
                object.__setattr__(obj, f.name, tuple(float(v) for v in value))
        else:  # pragma: no cover - a field type this module does not know
            raise TypeError(f"unsupported config field type {tp!r}")
        if not ok:
            _fail(section, f.name, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _cast(section: str, key: str, tp: Any, text: str) -> Any:
    """Cast a command-line string to the field type ``tp``."""
    t = text.strip()
    try:
        if tp is bool:
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError
        if tp is int:
            return int(t)
        if tp is float:
            v = float(t)
            return v
        if tp is str:
            return text
        if tp == tuple[float, ...]:
            inner = t[1:-1] if t.startswith(("[", "(")) and t.endswith(("]", ")")) else t
            parts = [p for p in inner.replace(" ", ",").split(",") if p]
            return tuple(float(p) for p in parts)
    except ValueError:
        pass
    _fail(section, key, f"cannot read {text!r} as {_type_name(tp)}")


fail, check_choice, check_positive = _fail, _check_choice, _check_positive
field_hints, type_name, check_types, cast_field = _hints, _type_name, _check_types, _cast
