"""Scrub personal data (emails, card numbers, phone numbers, names in JSON) from error texts.

Error messages come back from targets and may echo what we sent. They are
stored, logged and sent to Slack only after ``scrub``.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13-19 digits, optionally split by spaces or dashes (card numbers, PANs)
CARD = re.compile(r"(?<![\w.])(?:\d[ -]?){12,18}\d(?![\w.])")
PHONE = re.compile(r"(?<![\w.])\+\d[\d ()-]{7,}\d(?![\w.])")
# "name": "Jane Doe", 'email': '...', name=Jane Doe  (JSON or form-like key/value)
PERSONAL_KEYS = (r"(?:[a-z_]*name|customer|email|e-mail|phone(?:_?number)?|address(?:_line\d)?|line1|line2|postal_code|"
                 r"card(?:_?number)?|cardholder|cvc|cvv|exp_month|exp_year|iban|account_number|tax_id)")
KEY_VALUE = re.compile(r"""(?P<key>["']?\b""" + PERSONAL_KEYS + r"""["']?\s*[:=]\s*)(?P<q>["'])(?P<v>(?:\\.|(?!(?P=q)).)*)(?P=q)""",  # noqa: E501
                       re.IGNORECASE)
CARD_LAST4 = re.compile(r"(?P<key>[\"']?last4[\"']?\s*[:=]\s*)[\"']?\d{4}[\"']?", re.IGNORECASE)


# what a person's name or address looks like (two words), as opposed to an id such as cus_T0 or a code
_HUMAN = re.compile(r"[^\W\d_]{2,}\s+[^\W\d_]{2,}")


_PERSON_KEYS = {"name", "customer", "customer_name", "billing_name", "shipping_name", "cardholder",
                "cardholder_name", "first_name", "last_name", "full_name", "contact_name", "display_name",
                "email", "phone", "address", "line1", "line2", "givenname", "familyname", "primaryemailaddr"}


def personal_values(payload: Any) -> set[str]:
    """Values that identify a person: emails anywhere; multi-word values under a person's-name
    or address key, or under any ``*name`` key inside a customer object (CustomerRef.FullName).
    Account, item and class names are not personal and stay readable in errors."""
    found: set[str] = set()

    def walk(value: Any, key: str = "", in_customer: bool = False) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k), in_customer or "customer" in str(k).lower())
        elif isinstance(value, list):
            for v in value:
                walk(v, key, in_customer)
        elif isinstance(value, str):
            k = key.lower()
            personal_key = k in _PERSON_KEYS or (in_customer and k.endswith("name"))
            if EMAIL.search(value) or (personal_key and _HUMAN.search(value)):
                found.add(value.strip())

    walk(payload)
    return found


def scrub(text: str | None, known: Iterable[str] = ()) -> str | None:
    """The text with personal data replaced by ``[redacted ...]`` markers.

    ``known``: personal values we sent (from ``personal_values(payload)``); a
    target that echoes them back in free text is caught too.
    """
    if not text:
        return text
    for value in sorted(known, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    out = KEY_VALUE.sub(lambda m: f"{m.group('key')}{m.group('q')}[redacted]{m.group('q')}", text)
    out = EMAIL.sub("[redacted email]", out)
    out = CARD.sub("[redacted number]", out)
    out = PHONE.sub("[redacted phone]", out)
    out = CARD_LAST4.sub(lambda m: f"{m.group('key')}\"[redacted]\"", out)
    return out


def redact_payload(payload: Any) -> Any:
    """A copy of a payload for display (``inbox show``): the personal values ``personal_values``
    finds become ``[redacted]``, and emails, card and phone numbers inside other strings are
    scrubbed; ids, amounts and account names stay readable."""
    known = personal_values(payload)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return "[redacted]" if value.strip() in known else scrub(value, known)
        return value

    return walk(payload)
