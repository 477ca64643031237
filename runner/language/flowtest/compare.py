"""Expected vs produced payloads: exact or subset, money compared as decimals.

``"12.50"`` equals ``12.5`` and ``Decimal("12.500")`` whenever either side is a
number; two strings compare as text, so ``"007"`` is not ``"7"``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


MISSING: Any = _Missing()


def plain(value: Any) -> Any:
    """YAML values as JSON would give them: floats -> Decimal (as written), dates -> ISO text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, Decimal, float)) and not isinstance(x, bool)


def _as_decimal(x: Any) -> Decimal | None:
    if _is_number(x):
        return Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    if isinstance(x, str):
        try:
            d = Decimal(x.strip())
        except InvalidOperation:
            return None
        return d if d.is_finite() else None
    return None


def same_value(expected: Any, actual: Any) -> bool:
    """Scalar equality with money as decimals and booleans never equal to numbers."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if _is_number(expected) or _is_number(actual):
        e, a = _as_decimal(expected), _as_decimal(actual)
        if e is not None and a is not None:
            return e == a
    return expected == actual


def compare(expected: Any, actual: Any, exact: bool, path: tuple = ()) -> list[tuple[tuple, Any, Any]]:
    """Differences as (path, expected, actual); MISSING marks a side that has no value.

    Subset: every expected field must be there and equal; other fields may exist.
    Exact: no other fields either. Lists compare item by item in both modes.
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [(path, expected, actual)]
        out = []
        for k, v in expected.items():
            if k not in actual:
                out.append((path + (k,), v, MISSING))
            else:
                out.extend(compare(v, actual[k], exact, path + (k,)))
        if exact:
            out.extend((path + (k,), MISSING, v) for k, v in actual.items() if k not in expected)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [(path, expected, actual)]
        out = []
        for i in range(max(len(expected), len(actual))):
            if i >= len(actual):
                out.append((path + (i,), expected[i], MISSING))
            elif i >= len(expected):
                out.append((path + (i,), MISSING, actual[i]))
            else:
                out.extend(compare(expected[i], actual[i], exact, path + (i,)))
        return out
    return [] if same_value(expected, actual) else [(path, expected, actual)]
