"""Sage ``reference`` values that carry an operation's idempotency key.

Sage limits the length of references (25 characters on artefacts such as
invoices, payments, journals and transfers; we assume the same for contacts).
A key that fits is used as it is; a longer one becomes ``LF-`` and 22 base32
characters of its SHA-256 (110 bits: no collision in any real book). One
operation may create several documents; each gets its own reference from the
key and the document's part name, so they never collide with each other.
"""

from __future__ import annotations

import base64
import hashlib
import re

REFERENCE_MAX = 25
PREFIX = "LF-"
_PLAIN = re.compile(r"^[A-Za-z0-9._:/#-]+$")


def short_reference(key: str, part: str = "", limit: int = REFERENCE_MAX) -> str:
    """The deterministic reference for ``key`` (and ``part``) within ``limit`` characters."""
    raw = f"{key}#{part}" if part else key
    if len(raw) <= limit and _PLAIN.match(raw) and not raw.startswith(PREFIX):
        return raw
    digest = base64.b32encode(hashlib.sha256(raw.encode("utf-8")).digest()).decode("ascii").rstrip("=")
    return PREFIX + digest[: limit - len(PREFIX)]
