"""``http`` connector: POST JSON to a URL and classify the answer.

Config (ledgerflow.yaml ``connections.NAME``)::

    type: http
    url: https://example.com/hooks/ledger     # required
    timeout: 10                               # seconds, default 10
    headers: {X-Source: ledgerflow}           # plain headers (no secrets)
    bearer_token: {env: TARGET_TOKEN}         # optional secret reference
    idempotency_header: Idempotency-Key       # default
    concurrency: 4                            # parallel requests within a batch

Classification: timeout, connection error, 408 and 5xx -> RETRYABLE; 429 ->
THROTTLED with Retry-After (seconds or an HTTP date) honoured; 401 -> AUTH;
409 (a request with the same key is in flight) -> RETRYABLE; other 4xx ->
PERMANENT. The target de-duplicates by the idempotency header, so a repeat
after a lost response creates nothing new.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from connectors.base import Connector, ErrorKind, Item, Outcome, TargetError
from connectors.http import classify_response, json_body, send
from connectors.http import timeout as http_timeout

from .actions import ACTIONS


def classify(response: httpx.Response) -> TargetError | None:
    """None for a 2xx answer; otherwise the TargetError the runner acts on (connectors.http's rules)."""
    where = f"{response.request.method} {response.request.url.host}{response.request.url.path}"
    error = classify_response(response, where, field=_field(response))
    if response.status_code == 409:           # a request with the same key is still in flight there
        error = TargetError(str(error), ErrorKind.RETRYABLE)
    return error


def _field(response: httpx.Response) -> str | None:
    """The field a refusal names, in the common shapes {"error": {"field": ...}} or {"field": ...}."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        field = inner.get("field") or inner.get("param")
        return str(field) if field else None
    return None


def _target_ref(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("id") is not None:
        return str(body["id"])
    return response.headers.get("location")


class HttpPostConnector(Connector):
    type = "http"
    actions = ACTIONS

    def __init__(self, name: str, config: Any, runtime: Any):
        super().__init__(name, config, runtime)
        if not self.config.get("url"):
            raise TargetError(f"connections.{name}.url: expected the URL to POST to", ErrorKind.PERMANENT)
        headers = {str(k): str(v) for k, v in (self.config.get("headers") or {}).items()}
        token_ref = self.config.get("bearer_token")
        if token_ref is not None:
            token = runtime.secrets.resolve(token_ref, f"connections.{name}.bearer_token")
            headers["Authorization"] = f"Bearer {token}"
        self._header = str(self.config.get("idempotency_header", "Idempotency-Key"))
        self._workers = max(1, int(self.config.get("concurrency", 4)))
        timeout = http_timeout(self.config, 10)
        self._client = httpx.Client(headers=headers, timeout=timeout,
                                    limits=httpx.Limits(max_connections=self._workers * 2))
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix=f"http-{name}")

    def _post(self, item: Item) -> Outcome:
        if item.action not in ACTIONS:
            return Outcome.failed(item, TargetError(f"http has no action {item.action!r}", ErrorKind.PERMANENT))
        body = json_body(item.payload)     # exact decimals on the wire
        try:
            response = send(self._client, "POST", self.config["url"], f"posting to {self.name}", content=body,
                            headers={"Content-Type": "application/json", self._header: item.idempotency_key})
        except TargetError as exc:
            return Outcome.failed(item, exc)
        error = classify(response)
        if error is not None:
            return Outcome.failed(item, error)
        return Outcome.sent(item, _target_ref(response))

    def deliver(self, items: list[Item]) -> list[Outcome]:
        if len(items) == 1 or self._workers == 1:
            return [self._post(i) for i in items]
        return list(self._pool.map(self._post, items))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()
