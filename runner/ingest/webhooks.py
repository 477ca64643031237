"""Verifying a Stripe webhook request: signature, age, size and shape.

The signature check is Stripe's scheme as the stripe SDK checks it
(``stripe.WebhookSignature.verify_header``: HMAC-SHA256 over ``"{t}.{raw body}"``,
any matching ``v1``, constant-time comparison, timestamp tolerance), done here
over the raw bytes so the body is not decoded, formatted and re-encoded per
secret (tests/test_webhooks.py checks it against SDK-signed requests). Several
secrets may be valid at once while a secret is being rotated; the body is
accepted when any of them verifies it. The raw body is what the inbox keeps;
it is parsed with ``jsonio`` (exact decimals) when it is planned.

A signed body is still checked before it is queued, so that nothing the inbox
cannot store or the dispatcher cannot parse gets a 200 (or a 503 that Stripe
would retry for three days): nesting depth, ``NaN``/``Infinity``, ``created``
within a 64-bit integer, and ``id``/``type``/``account`` without control
characters or unpaired surrogates. A timestamp further in the future than
``future_tolerance`` is refused too (the SDK only refuses old ones).
"""

from __future__ import annotations

import hmac
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Sequence

import orjson

from runner.core.errors import EventError

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


MALFORMED = "malformed Stripe-Signature header (expected t=...,v1=...)"


def _parse_header(header: str) -> tuple[int, list[bytes]]:
    """``t`` and the ``v1`` signatures, read exactly as the stripe SDK reads them."""
    items = [i.split("=", 2) for i in header.split(",")]
    try:
        timestamp = int([i[1] for i in items if i[0] == "t"][0])
        signatures = [i[1].encode("utf-8") for i in items if i[0] == "v1"]
    except (IndexError, ValueError):
        raise Rejected(400, MALFORMED) from None
    if not signatures:
        raise Rejected(400, MALFORMED)
    return timestamp, signatures


def _check_signature(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int,
                     future_tolerance: int = DEFAULT_FUTURE_TOLERANCE, now: float | None = None) -> None:
    """Stripe's scheme, as ``stripe.WebhookSignature.verify_header`` checks it, without its copies:
    HMAC-SHA256 of ``"{t}." + body`` over the raw bytes in one C call (no decode, format and
    re-encode of the body, no Python HMAC object), the header parsed once for every secret, any
    ``v1`` compared in constant time."""
    if not header:
        raise Rejected(400, "missing Stripe-Signature header")
    timestamp, signatures = _parse_header(header)
    signed = b"%d." % timestamp + body
    matched = False
    for secret in secrets:
        if not secret or not secret.strip(" \t\r\n\f\v"):
            continue                  # the SDK refuses an empty secret: it matches nothing
        expected = hmac.digest(secret.encode("utf-8"), signed, "sha256").hex().encode()
        if any(hmac.compare_digest(expected, s) for s in signatures):
            matched = True
            break
    if not matched:
        raise Rejected(400, "no v1 signature matches any signing secret of this endpoint")
    now = time.time() if now is None else now
    if tolerance and timestamp < now - tolerance:
        raise Rejected(400, f"timestamp outside the tolerance of {tolerance}s", "timestamp outside the tolerance")
    if timestamp > now + future_tolerance:
        raise Rejected(400, f"timestamp more than {future_tolerance}s in the future", "timestamp in the future")


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
    ident, kind, account = event.get("id"), event.get("type"), event.get("account")
    if not (type(ident) is str and type(kind) is str and (account is None or type(account) is str)
            and len(ident) <= 255 and len(kind) <= 255 and len(account or "") <= 255
            and (joined := ident + kind + (account or "")).isascii() and joined.isprintable()):
        _check_envelope_fields(event)      # printable ASCII is the usual case; otherwise each field, named
    created = event.get("created")
    if created is not None and not (type(created) is int and 0 <= created < MAX_CREATED):
        raise Rejected(400, "body: the event's created must be a unix timestamp (an integer from 0 to 2^63-1)",
                       "body: created out of range")


def _check_envelope_fields(event: dict) -> None:
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


def verify(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int,
           max_bytes: int, future_tolerance: int = DEFAULT_FUTURE_TOLERANCE, now: float | None = None) -> Verified:
    """The verified event, or ``Rejected`` with 400/413 and a reason."""
    if len(body) > max_bytes:
        raise Rejected(413, f"body larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "body is not UTF-8 (expected a JSON Stripe event)") from None
    _check_signature(body, header, secrets, tolerance, future_tolerance, now)
    event = _parse(body, text)
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _too_deep(event):  # depth <= the brackets' count
        raise Rejected(400, f"body is nested more than {MAX_DEPTH} levels deep", "body nested too deeply")
    if not _looks_like_event(event):
        from runner.language.planner import check_event  # not at import: the planner is no part of serve's receiver
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
    import stripe  # not at import: the SDK costs serve about a second of start-up
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
