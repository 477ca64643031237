"""Sage's error answers as classified ``TargetError``s.

Sage answers a failure with a JSON list of ``{$severity, $dataCode, $message,
$source}``; ``$source`` names the field. 429 -> THROTTLED (``Retry-After``
honoured); 5xx and timeouts -> RETRYABLE; 401 (after one refresh) and 403 ->
AUTH; any other 4xx (422 validation, 404, 400) -> PERMANENT.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors.base import TargetError
from connectors.http import classify_status, response_retry_after

EXCERPT = 300


def sage_problems(body: Any) -> list[dict[str, str]]:
    """The error entries of a Sage error body (a list, or one object), as plain dicts."""
    entries = body if isinstance(body, list) else [body] if isinstance(body, dict) else []
    out = []
    for e in entries:
        if isinstance(e, dict) and ("$message" in e or "$dataCode" in e):
            out.append({"severity": str(e.get("$severity") or ""), "code": str(e.get("$dataCode") or ""),
                        "message": str(e.get("$message") or ""), "source": str(e.get("$source") or "")})
    return out


def describe(problems: list[dict[str, str]]) -> str:
    parts = []
    for p in problems:
        text = f"{p['source']}: {p['message']}" if p["source"] else p["message"]
        parts.append(text + (f" [{p['code']}]" if p["code"] else ""))
    return "; ".join(parts)


def classify(response: httpx.Response, what: str) -> TargetError | None:
    """None for 2xx; otherwise the error the runner acts on. ``what`` is e.g. ``POST /sales_invoices``."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    problems = sage_problems(body)
    detail = describe(problems) if problems else (response.text[:EXCERPT].strip() or "no body")
    field = next((p["source"] for p in problems if p["source"]), None)
    if status == 429:
        message = f"Sage throttled {what} (HTTP 429): {detail}"
    elif status >= 500 or status == 408:
        message = f"Sage failed on {what} (HTTP {status}): {detail}"
    elif status in (401, 403):
        message = f"Sage refused the credentials on {what} (HTTP {status}): {detail}"
    else:
        message = f"Sage rejected {what} (HTTP {status}): {detail}"
    return classify_status(status, message, retry_after=response_retry_after(response), field=field)
