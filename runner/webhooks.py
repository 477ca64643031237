"""Verifying a Stripe webhook request: signature, age, size and shape.

The signature check is the stripe SDK's own (``stripe.WebhookSignature``:
HMAC-SHA256 over ``"{t}.{raw body}"``, any matching ``v1``, constant-time
comparison, timestamp tolerance). Several secrets may be valid at once while a
secret is being rotated; the body is accepted when any of them verifies it.
The raw body is what the inbox keeps; it is parsed with ``jsonio`` (exact
decimals) when it is planned.

A signed body is still checked before it is queued, so that nothing the inbox
cannot store or the dispatcher cannot parse gets a 200 (or a 503 that Stripe
would retry for three days): nesting depth, ``NaN``/``Infinity``, ``created``
within a 64-bit integer, and ``id``/``type``/``account`` without control
characters or unpaired surrogates. A timestamp further in the future than
``future_tolerance`` is refused too (the SDK only refuses old ones).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Sequence

import orjson

from .errors import EventError
from .planner import check_event


MAX_DEPTH = 64                    # Stripe events nest about ten levels; the dispatcher parses recursively
MAX_CREATED = 2 ** 63             # the inbox's BIGINT
DEFAULT_FUTURE_TOLERANCE = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Rejected(Exception):
    """A request that must not be queued: HTTP status and a short reason (never the body).

    ``kind`` is a fixed label for counters and logs: it never carries anything
    the sender wrote (``reason`` may quote a field back to the sender)."""

    def __init__(self, status: int, reason: str, kind: str | None = None):
        self.status = status
        self.reason = reason
        self.kind = kind or reason
        super().__init__(f"{status} {reason}")


@dataclass(frozen=True)
class Verified:
    """``event`` is the parsed envelope, for id/type/account/created only (its floats are
    binary); ``raw`` is the body as sent, which the inbox keeps and the dispatcher parses
    with ``jsonio`` so amounts and rates stay exact."""

    event: dict[str, Any]
    raw: str


def _timestamp(header: str) -> int | None:
    """The ``t=`` the SDK verifies (the first one), as an integer."""
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _check_signature(text: str, header: str | None, secrets: Sequence[str], tolerance: int,
                     future_tolerance: int = DEFAULT_FUTURE_TOLERANCE, now: float | None = None) -> None:
    if not header:
        raise Rejected(400, "missing Stripe-Signature header")
    stale = False
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            t = _timestamp(header)
            if t is not None and t > (time.time() if now is None else now) + future_tolerance:
                raise Rejected(400, f"timestamp more than {future_tolerance}s in the future",
                               "timestamp in the future")
            return
        except stripe.SignatureVerificationError as exc:
            msg = str(exc)
            if "tolerance" in msg:
                stale = True      # signature matched this secret, but the timestamp is too old
            elif "Unable to extract" in msg or "No signatures found with expected scheme" in msg:
                raise Rejected(400, "malformed Stripe-Signature header (expected t=...,v1=...)") from None
    if stale:
        raise Rejected(400, f"timestamp outside the tolerance of {tolerance}s", "timestamp outside the tolerance")
    raise Rejected(400, "no v1 signature matches any signing secret of this endpoint")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse(body: bytes, text: str) -> Any:
    try:
        return orjson.loads(body)         # fast; only the envelope (id, type, account) is read here
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise Rejected(400, f"body is nested more than {MAX_DEPTH} levels deep", "body nested too deeply") \
                from None
    try:                                  # orjson refuses some valid JSON (lone surrogate escapes, say)
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise Rejected(400, f"body is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                       "body is not JSON") from None
    except ValueError as exc:             # NaN, Infinity, -Infinity
        raise Rejected(400, f"body is not JSON ({exc})", "body is not JSON") from None
    except RecursionError:
        raise Rejected(400, f"body is nested more than {MAX_DEPTH} levels deep", "body nested too deeply") from None


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if type(v) is dict:
            children = v.values()
        elif type(v) is list:
            children = v
        else:
            continue
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if type(c) in (dict, list))
    return False


def _check_envelope(event: dict) -> None:
    """What the inbox stores in its own columns must fit them on SQLite and PostgreSQL alike."""
    for key in ("id", "type", "account"):
        value = event.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 255:
            raise Rejected(400, f"body: the event's {key} must be a string of at most 255 characters",
                           "body: envelope field too long or not a string")
        if _CONTROL.search(value):
            raise Rejected(400, f"body: the event's {key} contains control characters (NUL, newline...)",
                           "body: control characters in the envelope")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected(400, f"body: the event's {key} contains an unpaired surrogate (\\ud800-\\udfff)",
                           "body: unpaired surrogate in the envelope") from None
    created = event.get("created")
    if created is not None and not (type(created) is int and 0 <= created < MAX_CREATED):
        raise Rejected(400, "body: the event's created must be a unix timestamp (an integer from 0 to 2^63-1)",
                       "body: created out of range")


def verify(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int,
           max_bytes: int, future_tolerance: int = DEFAULT_FUTURE_TOLERANCE, now: float | None = None) -> Verified:
    """The verified event, or ``Rejected`` with 400/413 and a reason."""
    if len(body) > max_bytes:
        raise Rejected(413, f"body larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "body is not UTF-8 (expected a JSON Stripe event)") from None
    _check_signature(text, header, secrets, tolerance, future_tolerance, now)
    event = _parse(body, text)
    if _too_deep(event):
        raise Rejected(400, f"body is nested more than {MAX_DEPTH} levels deep", "body nested too deeply")
    if not _looks_like_event(event):
        try:
            check_event(event, "body")      # says what is missing
        except EventError as exc:
            raise Rejected(400, str(exc), "body: not a Stripe event") from None
    _check_envelope(event)
    if event.get("object", "event") != "event":
        raise Rejected(400, f"body: expected object 'event', got {_CONTROL.sub('', str(event.get('object')))[:40]!r}",
                       "body: object is not 'event'")
    return Verified(event, text)


def _looks_like_event(event: Any) -> bool:
    """The fast path of ``check_event`` for the common case (plain dicts from orjson)."""
    if type(event) is not dict:
        return False
    data = event.get("data")
    return (type(event.get("id")) is str and bool(event["id"]) and type(event.get("type")) is str
            and bool(event["type"]) and type(data) is dict and type(data.get("object")) is dict)


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header as Stripe makes it (tests, bench, demo)."""
    import stripe               # not at import: the SDK costs serve about a second of start-up
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
