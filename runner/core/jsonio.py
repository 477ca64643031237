"""JSON that keeps money exact: Decimals in, Decimals out, never floats."""

from __future__ import annotations

import json
from decimal import Decimal
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal)


# what json.dumps(text, ensure_ascii=False) writes, without building an encoder per string
_string = encode_basestring


def _encode(value: Any, indent: int | None, level: int, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot encode {value} as JSON")
        out.append(format(value, "f"))
    elif value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))           # as json.dumps writes an int (or an IntEnum)
    elif isinstance(value, float):
        raise TypeError(f"a float ({value!r}) reached a payload; money must be Decimal")
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        sep, pad, end = _seps(indent, level)
        out.append("{" + pad)
        for i, (k, v) in enumerate(value.items()):
            if i:
                out.append("," + sep)
            out.append(_string(str(k)) + ": ")
            _encode(v, indent, level + 1, out)
        out.append(end + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        sep, pad, end = _seps(indent, level)
        out.append("[" + pad)
        for i, v in enumerate(value):
            if i:
                out.append("," + sep)
            _encode(v, indent, level + 1, out)
        out.append(end + "]")
    elif hasattr(value, "isoformat"):
        out.append(json.dumps(value.isoformat()))
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _seps(indent: int | None, level: int) -> tuple[str, str, str]:
    if indent is None:
        return "", "", ""
    inner = "\n" + " " * (indent * (level + 1))
    return inner, inner, "\n" + " " * (indent * level)


def dumps(value: Any, indent: int | None = None) -> str:
    """JSON text; Decimals become JSON numbers written exactly."""
    out: list[str] = []
    _encode(value, indent, 0, out)
    return "".join(out)
