"""Reading events from files (CLI, tests) with errors that say where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.core import jsonio
from runner.core.errors import EventError
from runner.language.planner import check_event


def load_event_file(path: str | Path) -> tuple[dict[str, Any], str]:
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EventError(f"{p}: event file not found") from None
    except UnicodeDecodeError:
        raise EventError(f"{p}: not UTF-8 text (expected a JSON Stripe event)") from None
    return parse_event(raw, str(p)), raw


def parse_event(raw: str | bytes, source: str) -> dict[str, Any]:
    try:
        event = jsonio.loads(raw)
    except json.JSONDecodeError as exc:
        raise EventError(f"{source}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    check_event(event, source)
    return event
