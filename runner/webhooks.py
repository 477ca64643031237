"""Verifying a Stripe webhook request: signature, age, size and shape.

The signature check is the stripe SDK's own (``stripe.WebhookSignature``:
HMAC-SHA256 over ``"{t}.{raw body}"``, any matching ``v1``, constant-time
comparison, timestamp tolerance). Several secrets may be valid at once while a
secret is being rotated; the body is accepted when any of them verifies it.
The raw body is what the inbox keeps; it is parsed with ``jsonio`` (exact
decimals) when it is planned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import orjson
import stripe

from . import jsonio
from .errors import EventError
from .planner import check_event


class Rejected(Exception):
    """A request that must not be queued: HTTP status and a short reason (never the body)."""

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


@dataclass(frozen=True)
class Verified:
    """``event`` is the parsed envelope, for id/type/account/created only (its floats are
    binary); ``raw`` is the body as sent, which the inbox keeps and the dispatcher parses
    with ``jsonio`` so amounts and rates stay exact."""

    event: dict[str, Any]
    raw: str


def _check_signature(text: str, header: str | None, secrets: Sequence[str], tolerance: int) -> None:
    if not header:
        raise Rejected(400, "missing Stripe-Signature header")
    stale = False
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            msg = str(exc)
            if "tolerance" in msg:
                stale = True      # signature matched this secret, but the timestamp is too old
            elif "Unable to extract" in msg or "No signatures found with expected scheme" in msg:
                raise Rejected(400, "malformed Stripe-Signature header (expected t=...,v1=...)") from None
    if stale:
        raise Rejected(400, f"timestamp outside the tolerance of {tolerance}s")
    raise Rejected(400, "no v1 signature matches any signing secret of this endpoint")


def verify(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int,
           max_bytes: int) -> Verified:
    """The verified event, or ``Rejected`` with 400/413 and a reason."""
    if len(body) > max_bytes:
        raise Rejected(413, f"body larger than {max_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "body is not UTF-8 (expected a JSON Stripe event)") from None
    _check_signature(text, header, secrets, tolerance)
    try:
        event = orjson.loads(body)        # fast; only the envelope (id, type, account) is read here
    except orjson.JSONDecodeError:
        try:                              # orjson refuses some valid JSON (integers beyond 64 bits)
            event = jsonio.loads(text)
        except json.JSONDecodeError as exc:
            raise Rejected(400, f"body is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not _looks_like_event(event):
        try:
            check_event(event, "body")      # says what is missing
        except EventError as exc:
            raise Rejected(400, str(exc)) from None
    for key in ("id", "type", "account"):
        value = event.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise Rejected(400, f"body: the event's {key} must be a string of at most 255 characters")
    if event.get("object", "event") != "event":
        raise Rejected(400, f"body: expected object 'event', got {str(event.get('object'))[:40]!r}")
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
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
