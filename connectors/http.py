"""What every HTTP connector needs and used to write for itself: one reading of
``Retry-After``, one refresh-once-on-401 loop, one classification of answers by
status code, and the timeouts. (The connectors each had their own, and they
disagreed: an HTTP-date Retry-After gave 119 s in two and nothing in the others.)

* ``retry_after_seconds``: delta-seconds or an HTTP-date, rounded up to whole
  seconds as the header is (an HTTP-date 2 minutes ahead is 120 s, not 119.4).
* ``send_with_refresh``: one request with a bearer token; a 401 refreshes the
  token once (``session.invalidate``) and repeats; a second 401 is returned
  for the caller to classify as AUTH. Timeouts and connection errors become
  RETRYABLE ``TargetError``s.
* ``classify_status``: 429 -> THROTTLED (with Retry-After), 408/5xx ->
  RETRYABLE, 401/403 -> AUTH, other 4xx -> PERMANENT naming the field the
  body names (when the caller can find it).
"""

from __future__ import annotations

import json
import math
import time
from decimal import Decimal
from email.utils import parsedate_to_datetime
from json.encoder import encode_basestring as _json_string  # type: ignore[attr-defined]  # as json.dumps(ensure_ascii=False)
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .base import ErrorKind, TargetError

if TYPE_CHECKING:  # httpx is imported by the connectors that send, never on the validate path
    import httpx

DEFAULT_TIMEOUT = 30.0
EXCERPT = 300


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 10.2.3).
    None when absent or unreadable; never negative. An HTTP-date has whole seconds, so the wait is
    rounded up: the clock has moved on since the server wrote the header, but not past it."""
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return float(max(0, math.ceil(when - (time.time() if now is None else now))))


def response_retry_after(response: "httpx.Response") -> float | None:
    return retry_after_seconds(response.headers.get("retry-after"))


def timeout(config: Mapping[str, Any], default: float = DEFAULT_TIMEOUT) -> float:
    """The connection's ``timeout`` in seconds (the one setting every HTTP connector has)."""
    return float(config.get("timeout", default))


def classify_status(status: int, message: str, *, retry_after: float | None = None,
                    field: str | None = None) -> TargetError | None:
    """None for 2xx; else the TargetError the runner's retry policy acts on."""
    if 200 <= status < 300:
        return None
    if status == 429:
        return TargetError(message, ErrorKind.THROTTLED, retry_after=retry_after)
    if status in (401, 403):
        return TargetError(message, ErrorKind.AUTH, field=field)
    if status == 408 or status >= 500:
        return TargetError(message, ErrorKind.RETRYABLE, retry_after=retry_after)
    return TargetError(message, ErrorKind.PERMANENT, field=field)


def classify_response(response: "httpx.Response", what: str, *, detail: str | None = None,
                      field: str | None = None) -> TargetError | None:
    """``classify_status`` for an httpx answer: the message says what was asked and what came back
    (``detail``, or the start of the body)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    if detail is None:
        detail = response.text[:EXCERPT].strip() if response.content else ""
    if field and field not in detail:
        detail = f"{field}: {detail}" if detail else field
    message = f"HTTP {status} from {what}" + (f": {detail}" if detail else "")
    return classify_status(status, message, retry_after=response_retry_after(response), field=field)


def _json(value: Any) -> str:
    """Compact JSON text as ``runner.core.jsonio.dumps`` writes it: Decimals as exact numbers, a float refused."""
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot encode {value} as JSON")
        return format(value, "f")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        raise TypeError(f"a float ({value!r}) reached a payload; money must be Decimal")
    if isinstance(value, dict):
        return "{" + ",".join(_json_string(str(k)) + ": " + _json(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(v) for v in value) + "]"
    if hasattr(value, "isoformat"):
        return json.dumps(value.isoformat())
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def json_body(value: Any) -> bytes:
    """A request body with exact decimals (money is never a float on the wire)."""
    return _json(value).encode("utf-8")


def json_answer(response: "httpx.Response") -> Any:
    """The answer's JSON with decimals kept exact; None for an empty body."""
    return json.loads(response.content, parse_float=Decimal) if response.content else None


def send(http: "httpx.Client", method: str, url: str, what: str, **kw: Any) -> "httpx.Response":
    """One request; a timeout or a connection error is a RETRYABLE TargetError naming ``what``."""
    import httpx
    try:
        return http.request(method, url, **kw)
    except httpx.TimeoutException as exc:
        limit = getattr(http.timeout, "read", None)
        raise TargetError(f"{what} timed out ({type(exc).__name__}" + (f", timeout {limit:g} s)" if limit else ")"),
                          ErrorKind.RETRYABLE) from None
    except httpx.TransportError as exc:
        raise TargetError(f"{what}: connection error ({type(exc).__name__})", ErrorKind.RETRYABLE) from None


def send_with_refresh(http: "httpx.Client", session: Any, method: str, url: str, what: str, *,
                      token_headers: Callable[[Any], dict[str, str]] | None = None, **kw: Any) -> "httpx.Response":
    """``send`` with the session's bearer token; on a 401 the token is refreshed once
    (``session.invalidate(version)``, which reuses a token another worker has just refreshed) and
    the request repeated. The second answer is returned whatever it is: a 401 again is the
    caller's AUTH error. ``token_headers(tokens)`` adds headers that depend on the tokens."""
    extra = kw.pop("headers", None) or {}
    tokens, version = session.current()
    for attempt in (1, 2):
        h = {"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json",
             **(token_headers(tokens) if token_headers else {}), **extra}
        response = send(http, method, url, what, headers=h, **kw)
        if response.status_code != 401 or attempt == 2:
            return response
        tokens, version = session.invalidate(version)
    raise AssertionError("unreachable")  # pragma: no cover
