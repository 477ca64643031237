"""HTTP client for the QuickBooks Online Accounting API v3 (httpx).

Realm-scoped endpoints, ``minorversion`` on every call, ``requestid`` on
creates and batches, OAuth 2 bearer tokens from ``connectors.oauth`` (a 401
refreshes once, then is AUTH: ``connectors.http.send_with_refresh``), Intuit's limits through the store-backed
``Runtime.limiter`` (shared by every worker), and Intuit's Fault bodies — also
inside HTTP 200 responses — turned into classified ``TargetError``s that
name the field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import httpx

from ..base import ErrorKind, Limit, RateLimitTimeout, TargetError
from ..http import json_answer, json_body, response_retry_after, send_with_refresh
from ..oauth import OAuthSession

BASE_URLS = {"sandbox": "https://sandbox-quickbooks.api.intuit.com",
             "production": "https://quickbooks.api.intuit.com"}
TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
AUTHORIZE_URL = "https://appcenter.intuit.com/connect/oauth2"
SCOPE = "com.intuit.quickbooks.accounting"
MINOR_VERSION = 75
REQUESTID_MAX = 50
RECONNECT = "reconnect with `ledgerflow connect quickbooks-online`"

# Fault codes with their own handling
DUPLICATE_DOCNUMBER = "6140"
DUPLICATE_NAME = "6240"
THROTTLE_CODES = {"3001", "003001"}


def request_id(key: str) -> str:
    """The idempotency key as Intuit's ``requestid`` (<= 50 chars): itself when short and plain,
    else a deterministic hash."""
    if len(key) <= REQUESTID_MAX and all(c.isalnum() or c in "-_.:" for c in key):
        return key
    return "lf-" + hashlib.sha256(key.encode()).hexdigest()[:REQUESTID_MAX - 3]


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int = 500
    concurrency: int = 10
    batch_per_minute: int = 40
    batch_size: int = 30
    max_wait: float = 65.0          # wait this long for a slot inline; longer: THROTTLED, retried later

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "Limits":
        return cls(**{k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__})


class QboFault(TargetError):
    """An Intuit Fault. ``code`` and ``element`` are Intuit's; ``fault_type`` e.g. ValidationFault."""

    def __init__(self, message: str, kind: ErrorKind, *, code: str = "", element: str | None = None,
                 fault_type: str = "", detail: str = "", retry_after: float | None = None):
        self.code = code
        self.fault_type = fault_type
        self.detail = detail
        super().__init__(message, kind, retry_after=retry_after, field=element or None)


def _get(d: Mapping[str, Any], key: str) -> Any:
    """Intuit capitalises keys in most bodies and not in 401 bodies (``fault.error[].message``)."""
    return d.get(key, d.get(key[:1].lower() + key[1:]))


def fault_of(body: Any) -> Mapping[str, Any] | None:
    return _get(body, "Fault") if isinstance(body, Mapping) and _get(body, "Fault") else None


def fault_error(fault: Mapping[str, Any], what: str, status: int = 200,
                retry_after: float | None = None) -> QboFault:
    """Classify an Intuit Fault: validation -> PERMANENT, authentication/authorization -> AUTH,
    throttling -> THROTTLED, system -> RETRYABLE."""
    errors = _get(fault, "Error") or [{}]
    first = errors[0] if isinstance(errors, list) and errors else {}
    code = str(_get(first, "code") or "").lstrip("0") or ""
    ftype = str(_get(fault, "type") or "")
    message = str(_get(first, "Message") or "").strip()
    detail = str(_get(first, "Detail") or "").strip()
    element = _get(first, "element") or None
    if status == 429 or code in {c.lstrip("0") for c in THROTTLE_CODES}:
        kind = ErrorKind.THROTTLED
    elif status in (401, 403) or ftype.lower() in ("authenticationfault", "authentication", "authorizationfault"):
        kind = ErrorKind.AUTH
    elif status >= 500 or ftype.lower() in ("systemfault", "system"):
        kind = ErrorKind.RETRYABLE
    else:
        kind = ErrorKind.PERMANENT
    text = f"QuickBooks Online rejected {what}: {message or ftype or 'fault'}"
    if detail and detail != message:
        text += f" — {detail}"
    text += f" (Intuit code {code or '?'}" + (f", field {element}" if element else "") + ")"
    if kind == ErrorKind.AUTH:
        text += f"; {RECONNECT}"
    return QboFault(text, kind, code=code, element=element, fault_type=ftype, detail=detail,
                    retry_after=retry_after)


class QboClient:
    """One company (realm). Thread-safe: batches may be sent from several threads."""

    def __init__(self, *, base_url: str, realm_id: str, session: OAuthSession, http: httpx.Client,
                 limiter: Any = None, limits: Limits = Limits(),
                 minorversion: int = MINOR_VERSION):
        self.base_url = base_url.rstrip("/")
        self.realm_id = realm_id
        self.session = session
        self.http = http
        self.limiter = limiter
        self.limits = limits
        self.minorversion = minorversion
        self.key = f"qbo:{realm_id}"

    # ---- one HTTP request, with limits, token refresh and classification ------------

    def _limits(self, batch: bool) -> list[Limit]:
        lims = [Limit(self.key, rate=self.limits.requests_per_minute, per=60.0, concurrency=self.limits.concurrency)]
        if batch:
            lims.append(Limit(self.key + ":batch", rate=self.limits.batch_per_minute, per=60.0))
        return lims

    def request(self, method: str, resource: str, *, params: dict[str, Any] | None = None,
                body: Any = None, what: str = "the request", batch: bool = False) -> dict[str, Any]:
        url = f"{self.base_url}/v3/company/{self.realm_id}/{resource}"
        query = {"minorversion": str(self.minorversion), **(params or {})}
        slots: list[int] = []
        if self.limiter is not None:
            try:
                slots = self.limiter.acquire(self._limits(batch), max_wait=self.limits.max_wait)
            except RateLimitTimeout as exc:
                raise TargetError(f"QuickBooks Online limits for realm {self.realm_id} are used up for now",
                                  ErrorKind.THROTTLED, retry_after=exc.wait) from None
        try:
            resp = self._send(method, url, query, body)
        finally:
            if self.limiter is not None:
                self.limiter.release(slots)
        return self._result(resp, what)

    def _send(self, method: str, url: str, query: dict, body: Any) -> httpx.Response:
        content = None if body is None else json_body(body)
        headers = {"Content-Type": "application/json"} if content is not None else {}
        # OAuthError (AUTH/RETRYABLE) propagates as a TargetError; a 401 refreshes once (or reuses another worker's)
        return send_with_refresh(self.http, self.session, method, url,
                                 f"QuickBooks Online ({method} {url.rsplit('/', 1)[-1]})",
                                 params=query, content=content, headers=headers)

    def _result(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        status = resp.status_code
        try:
            body = json_answer(resp) if resp.content else {}
        except ValueError:
            body = None
        retry_after = response_retry_after(resp)
        if status == 429:
            wait = retry_after if retry_after is not None else 60.0
            if self.limiter is not None:
                import time
                self.limiter.block(self.key, time.time() + wait)
            fault = fault_of(body)
            err = fault_error(fault, what, status, wait) if fault else None
            raise TargetError(f"QuickBooks Online throttled {what} (HTTP 429); waiting {wait:g} s"
                              + (f": {err}" if err else ""), ErrorKind.THROTTLED, retry_after=wait)
        if status == 401:
            raise TargetError(f"QuickBooks Online refused the access token for {what} after a refresh; {RECONNECT}",
                              ErrorKind.AUTH)
        fault = fault_of(body)
        if fault:
            raise fault_error(fault, what, status, retry_after)
        if status >= 500:
            raise TargetError(f"QuickBooks Online answered HTTP {status} for {what}", ErrorKind.RETRYABLE,
                              retry_after=retry_after)
        if status >= 400 or not isinstance(body, dict):
            raise TargetError(f"QuickBooks Online answered HTTP {status} without a Fault for {what}",
                              ErrorKind.PERMANENT if 400 <= status < 500 else ErrorKind.RETRYABLE)
        return body

    # ---- the API ----------------------------------------------------------------------

    def create(self, entity: str, resource: str, payload: Mapping[str, Any], requestid: str) -> dict[str, Any]:
        body = self.request("POST", resource, params={"requestid": requestid}, body=payload,
                            what=f"the {entity}")
        if entity not in body:
            raise TargetError(f"QuickBooks Online's answer to a {entity} create has no {entity}", ErrorKind.RETRYABLE)
        return body[entity]

    def query(self, statement: str, what: str = "a query") -> dict[str, Any]:
        body = self.request("GET", "query", params={"query": statement}, what=what)
        return body.get("QueryResponse") or {}

    def batch(self, items: list[dict[str, Any]], requestid: str) -> dict[str, dict[str, Any]]:
        """POST /batch; the BatchItemResponse entries by bId."""
        if len(items) > self.limits.batch_size:
            raise ValueError(f"a batch holds at most {self.limits.batch_size} items")
        body = self.request("POST", "batch", params={"requestid": requestid},
                            body={"BatchItemRequest": items}, what=f"a batch of {len(items)}", batch=True)
        return {str(r.get("bId")): r for r in body.get("BatchItemResponse") or []}


def quote(value: str) -> str:
    """A string literal for Intuit's query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
