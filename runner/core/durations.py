"""Durations as flows and ledgerflow.yaml write them: ``500ms``, ``5s``, ``15m``, ``1h``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")


def parse_duration(text: str) -> float:
    """Seconds; ValueError naming what was expected."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expected a duration like 5s, 15m or 1h, got {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
