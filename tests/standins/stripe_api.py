"""A local stand-in for Stripe's REST API (read side), as an ASGI app.

Shaped like Stripe's own objects (``fixtures3.json``) and behaving as Stripe
documents it, failures included:

* ``Authorization: Bearer <secret key>``; a bad or missing key gets 401 with
  Stripe's error body; ``Stripe-Account: acct_...`` scopes a request to a
  connected account (403 ``account_invalid`` for an unknown one);
* list endpoints return ``{"object": "list", "data", "has_more", "url"}``,
  newest first, with cursor pagination (``limit`` 1..100, ``starting_after``,
  ``ending_before``) and ``created[gt|gte|lt|lte]`` filters;
* ``GET /v1/<resource>/<id>`` retrieves (404 ``resource_missing`` otherwise);
* ``/v1/payouts``: ``status``, ``arrival_date[...]`` filters;
  ``/v1/balance_transactions``: ``payout=po_...``, ``type``, ``source`` and
  ``expand[]=data.source``; ``/v1/events``: ``type`` (``charge.*``) and
  ``types[]``;
* injected failures (:meth:`StripeStandin.inject`): 429 with Stripe's
  ``rate_limit`` body (and ``Retry-After`` when asked), 500/503 with
  ``api_error`` bodies;
* an optional rate limiter (``StripeStandin(rate_limit=100)``): Stripe's
  basic limiter allows 100 read requests per second in live mode (25 in test
  mode) per account (https://docs.stripe.com/rate-limits). Modelled as a
  token bucket (burst = one second's worth) per API key, or per
  ``(key, Stripe-Account)`` with ``rate_limit_per="account"``; a request over
  the limit gets 429 with Stripe's body ``{"error": {"type":
  "invalid_request_error", "code": "rate_limit", "message": ...}}`` (Stripe
  documents no ``Retry-After`` for it; ``rate_limit_retry_after=`` adds one);
* an optional per-request latency (``latency=0.02``: every answer takes
  20 ms, an ``asyncio.sleep`` so concurrent requests overlap as they would);
* counters for benchmarks (:meth:`StripeStandin.stats`): requests answered,
  429s, other errors, per path prefix (``/v1/balance_transactions``...), and
  the busiest second;
* application fee refunds (``fee_refund``, ``fr_...``) under
  ``/v1/application_fees/{fee}/refunds[/{fr}]`` (Stripe has no top-level
  list for them); they are also retrievable as a balance transaction's
  ``source`` via ``expand``.

The store is in memory, per scope (``None`` = the platform, or an account id)
and resource; lists keep a sorted copy and an id -> position index, so paging
through 100,000 objects costs O(limit) per page.

Use with the official SDK::

    StripeClient("sk_test_standin", base_addresses={"api": server.url})
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DEFAULT_KEY = "sk_test_standin"

# URL path segment -> the ``object`` value of its items
RESOURCES = {
    "events": "event", "payouts": "payout", "balance_transactions": "balance_transaction",
    "charges": "charge", "refunds": "refund", "disputes": "dispute", "application_fees": "application_fee",
    "transfers": "transfer", "accounts": "account", "payment_intents": "payment_intent",
    "customers": "customer", "topups": "topup",
}
OBJECT_TO_RESOURCE = {v: k for k, v in RESOURCES.items()}
# stored, but served only nested under their parent (/v1/application_fees/{fee}/refunds)
OBJECT_TO_RESOURCE["fee_refund"] = "fee_refunds"
RATE_LIMIT_MESSAGE = ("Request rate limit exceeded. Learn more about rate limits here "
                      "https://stripe.com/docs/rate-limits.")
# object types whose balance transactions point at them as ``source``
_RANGE_OPS = ("gt", "gte", "lt", "lte")


class _Collection:
    """Objects of one resource in one scope, listable newest first."""

    def __init__(self) -> None:
        self._items: list[dict] = []
        self._sorted: list[dict] | None = None
        self._pos: dict[str, int] = {}

    def add(self, obj: dict) -> None:
        self._items.append(obj)
        self._sorted = None

    def remove(self, obj_id: str) -> None:
        self._items = [o for o in self._items if o["id"] != obj_id]
        self._sorted = None

    def ordered(self) -> tuple[list[dict], dict[str, int]]:
        if self._sorted is None:
            self._sorted = sorted(self._items, key=lambda o: (o.get("created", 0), o["id"]), reverse=True)
            self._pos = {o["id"]: i for i, o in enumerate(self._sorted)}
        return self._sorted, self._pos

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Fault:
    status: int
    remaining: int
    path_prefix: str | None
    retry_after: int | None


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def path_prefix(path: str) -> str:
    """``/v1/balance_transactions/txn_1`` -> ``/v1/balance_transactions`` (what the counters key on)."""
    parts = path.split("/")
    return "/".join(parts[:3]) if len(parts) >= 3 else path


class StripeError(Exception):
    def __init__(self, status: int, body: dict, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, message: str, type_: str = "invalid_request_error", **extra: Any) -> StripeError:
    body = {"error": {"message": message, "type": type_, **extra}}
    if "code" in extra:
        body["error"]["doc_url"] = f"https://stripe.com/docs/error-codes/{extra['code'].replace('_', '-')}"
    return StripeError(status, body)


class StripeStandin:
    """In-memory Stripe. Add objects with :meth:`add`; serve :attr:`app`."""

    def __init__(self, api_keys: Iterable[str] = (DEFAULT_KEY,), *, rate_limit: float | None = None,
                 rate_limit_per: str = "key", rate_limit_burst: float | None = None,
                 rate_limit_retry_after: int | None = None, latency: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``rate_limit``: requests per second per bucket (None: no limiter; Stripe's live-mode read
        limit is 100, test mode 25). ``rate_limit_per``: ``"key"`` (one bucket per API key, what
        a platform's key sees) or ``"account"`` (one per key and ``Stripe-Account``).
        ``rate_limit_burst``: bucket size (default: one second's worth). ``latency``: seconds every
        answer takes."""
        if rate_limit_per not in ("key", "account"):
            raise ValueError(f"rate_limit_per: 'key' or 'account', not {rate_limit_per!r}")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError("rate_limit must be positive (or None for no limit)")
        self.api_keys = set(api_keys)
        self.rate_limit, self.rate_limit_per = rate_limit, rate_limit_per
        self.rate_limit_burst = rate_limit_burst if rate_limit_burst is not None else (rate_limit or 0)
        self.rate_limit_retry_after = rate_limit_retry_after
        self.latency = latency
        self._clock = clock
        self._buckets: dict[tuple[str, str | None], _Bucket] = {}
        self.requests: Counter[str] = Counter()      # path prefix -> requests answered (any status)
        self.limited: Counter[str] = Counter()       # path prefix -> 429s (rate limiter or injected)
        self.errors: Counter[str] = Counter()        # path prefix -> other non-2xx answers
        self._per_second: Counter[int] = Counter()   # whole clock second -> requests answered
        self._scopes: dict[str | None, dict[str, _Collection]] = {}
        self._by_id: dict[str | None, dict[str, dict]] = {}
        self._by_payout: dict[tuple[str | None, str], _Collection] = {}
        self.accounts: set[str] = set()
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()         # "GET /v1/payouts" -> count (paths without ids)
        self.app = Starlette(routes=[
            Route("/v1/{resource}", self._list, methods=["GET"]),
            Route("/v1/{resource}/{obj_id}", self._retrieve, methods=["GET"]),
            Route("/v1/application_fees/{fee_id}/refunds", self._fee_refunds, methods=["GET"]),
            Route("/v1/application_fees/{fee_id}/refunds/{obj_id}", self._fee_refund, methods=["GET"]),
        ])

    # ---- data ------------------------------------------------------------------

    def add(self, obj: dict, *, account: str | None = None, payout: str | None = None) -> dict:
        """Store an object (by its ``object`` type) in the platform's or an account's scope.

        ``payout`` links a balance transaction to the automatic payout that paid
        it out (what ``/v1/balance_transactions?payout=`` lists).
        """
        resource = OBJECT_TO_RESOURCE.get(obj.get("object", ""))
        if resource is None:
            raise ValueError(f"the stand-in does not serve objects of type {obj.get('object')!r}")
        if account is not None and resource != "accounts":
            self.accounts.add(account)
        with self._lock:
            self._scopes.setdefault(account, {}).setdefault(resource, _Collection()).add(obj)
            self._by_id.setdefault(account, {})[obj["id"]] = obj
            if resource == "accounts":
                self.accounts.add(obj["id"])
            if payout is not None:
                self._by_payout.setdefault((account, payout), _Collection()).add(obj)
        return obj

    def add_many(self, objs: Iterable[dict], *, account: str | None = None, payout: str | None = None) -> None:
        for o in objs:
            self.add(o, account=account, payout=payout)

    def get(self, obj_id: str, account: str | None = None) -> dict | None:
        return self._by_id.get(account, {}).get(obj_id)

    def objects(self, resource: str, account: str | None = None) -> list[dict]:
        return list(self._scopes.get(account, {}).get(resource, _Collection()).ordered()[0])

    def stats(self) -> dict:
        """How busy Stripe was kept: totals, per path prefix, and the busiest second."""
        prefixes = sorted(set(self.requests) | set(self.limited))
        return {
            "requests": sum(self.requests.values()), "limited": sum(self.limited.values()),
            "errors": sum(self.errors.values()),
            "served": sum(self.requests.values()) - sum(self.limited.values()) - sum(self.errors.values()),
            "peak_per_second": max(self._per_second.values(), default=0),
            "by_prefix": {p: {"requests": self.requests[p], "limited": self.limited[p],
                              "errors": self.errors[p]} for p in prefixes},
        }

    def reset_stats(self) -> None:
        self.requests.clear()
        self.limited.clear()
        self.errors.clear()
        self._per_second.clear()
        self.calls.clear()

    def inject(self, status: int, count: int = 1, *, path_prefix: str | None = None,
               retry_after: int | None = None) -> None:
        """Fail the next ``count`` matching requests with ``status`` (429, 500, 503...)."""
        self._faults.append(_Fault(status, count, path_prefix, retry_after))

    # ---- HTTP ------------------------------------------------------------------

    def _authorize(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if not auth:
            raise _error(401, "You did not provide an API key. You need to provide your API key in the "
                              "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if key not in self.api_keys:
            shown = (key[:8] + "*" * 12 + key[-4:]) if len(key) > 12 else "****"
            raise _error(401, f"Invalid API Key provided: {shown}")
        account = request.headers.get("stripe-account") or None
        if account is not None and account not in self.accounts:
            raise _error(403, f"The provided key '{key[:8]}****' does not have access to account '{account}' "
                              "(or that account does not exist). Application access may have been revoked.",
                         code="account_invalid")
        return account

    def _throttle(self, request: Request, account: str | None) -> None:
        """Stripe's rate limiter: 429 ``rate_limit`` when the caller's bucket is empty."""
        if self.rate_limit is None:
            return
        key = request.headers.get("authorization", "")[7:].strip()
        bucket_key = (key, account if self.rate_limit_per == "account" else None)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(bucket_key)
            if bucket is None:
                bucket = self._buckets[bucket_key] = _Bucket(self.rate_limit, max(1.0, self.rate_limit_burst), now)
            ok = bucket.take(now)
        if not ok:
            err = _error(429, RATE_LIMIT_MESSAGE, code="rate_limit")
            if self.rate_limit_retry_after is not None:
                err.headers["Retry-After"] = str(self.rate_limit_retry_after)
            raise err

    def _fault(self, path: str) -> None:
        for f in self._faults:
            if f.remaining > 0 and (f.path_prefix is None or path.startswith(f.path_prefix)):
                f.remaining -= 1
                if f.status == 429:
                    err = _error(429, RATE_LIMIT_MESSAGE, code="rate_limit")
                    if f.retry_after is not None:
                        err.headers["Retry-After"] = str(f.retry_after)
                    raise err
                raise _error(f.status, "An unknown error occurred", "api_error")
        self._faults = [f for f in self._faults if f.remaining > 0]

    async def _handle(self, request: Request, fn: Callable[[Request, str | None], Any]) -> Response:
        request_id = "req_" + uuid.uuid4().hex[:14]
        prefix = path_prefix(request.url.path)
        try:
            account = self._authorize(request)
            self._throttle(request, account)
            self._fault(request.url.path)
            body = fn(request, account)
            status, headers = 200, {}
        except StripeError as exc:
            status, body, headers = exc.status, exc.body, exc.headers
            body["error"].setdefault("request_log_url",
                                     f"https://dashboard.stripe.com/test/logs/{request_id}")
        headers["Request-Id"] = request_id
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        self.requests[prefix] += 1
        self._per_second[int(self._clock())] += 1
        if status == 429:
            self.limited[prefix] += 1
        elif status >= 300:
            self.errors[prefix] += 1
        return Response(json.dumps(body, separators=(",", ":")), status, headers=headers,
                        media_type="application/json")

    async def _list(self, request: Request) -> Response:
        return await self._handle(request, self._do_list)

    async def _retrieve(self, request: Request) -> Response:
        return await self._handle(request, self._do_retrieve)

    async def _fee_refunds(self, request: Request) -> Response:
        return await self._handle(request, self._do_fee_refunds)

    async def _fee_refund(self, request: Request) -> Response:
        return await self._handle(request, self._do_fee_refund)

    def _fee(self, request: Request, account: str | None) -> str:
        fee_id = request.path_params["fee_id"]
        fee = self._by_id.get(account, {}).get(fee_id)
        if fee is None or fee.get("object") != "application_fee":
            raise _error(404, f"No such application fee: '{fee_id}'", code="resource_missing", param="id")
        return fee_id

    def _do_fee_refunds(self, request: Request, account: str | None) -> dict:
        fee_id = self._fee(request, account)
        self.calls["GET /v1/application_fees/:id/refunds"] += 1
        return self._do_list(request, account, resource="fee_refunds",
                             extra=lambda o: o.get("fee") == fee_id,
                             url=f"/v1/application_fees/{fee_id}/refunds")

    def _do_fee_refund(self, request: Request, account: str | None) -> dict:
        fee_id = self._fee(request, account)
        self.calls["GET /v1/application_fees/:id/refunds/:id"] += 1
        obj_id = request.path_params["obj_id"]
        obj = self._by_id.get(account, {}).get(obj_id)
        if obj is None or obj.get("object") != "fee_refund" or obj.get("fee") != fee_id:
            raise _error(404, f"No such fee refund: '{obj_id}'", code="resource_missing", param="id")
        return self._expand(obj, _expands(request), account, prefix="")

    def _resource(self, request: Request) -> str:
        resource = request.path_params["resource"]
        if resource not in RESOURCES:
            raise _error(404, f"Unrecognized request URL (GET: {request.url.path}). Please see "
                              "https://stripe.com/docs or we can help at https://support.stripe.com/.")
        return resource

    def _do_retrieve(self, request: Request, account: str | None) -> dict:
        resource = self._resource(request)
        self.calls[f"GET /v1/{resource}/:id"] += 1
        obj_id = request.path_params["obj_id"]
        obj = self._by_id.get(account, {}).get(obj_id)
        if obj is None or obj.get("object") != RESOURCES[resource]:
            raise _error(404, f"No such {RESOURCES[resource].replace('_', ' ')}: '{obj_id}'", code="resource_missing",
                         param="id")
        return self._expand(obj, _expands(request), account, prefix="")

    def _do_list(self, request: Request, account: str | None, *, resource: str | None = None,
                 extra: Callable[[dict], bool] | None = None, url: str | None = None) -> dict:
        if resource is None:
            resource = self._resource(request)
            self.calls[f"GET /v1/{resource}"] += 1
        q = request.query_params
        limit = _int(q.get("limit", "10"), "limit")
        if not 1 <= limit <= 100:
            raise _error(400, f"Invalid integer: {limit}; must be between 1 and 100", param="limit")
        if q.get("starting_after") and q.get("ending_before"):
            raise _error(400, "You may only specify one of these parameters: ending_before, starting_after.",
                         param="ending_before")
        if resource == "accounts" and account is not None:
            raise _error(400, "Listing connected accounts needs the platform's key without Stripe-Account.")
        coll: _Collection | None
        payout = q.get("payout")
        if resource == "balance_transactions" and payout:
            coll = self._by_payout.get((account, payout))
            if coll is None:
                po = self._by_id.get(account, {}).get(payout)
                if po is None:
                    raise _error(404, f"No such payout: '{payout}'", code="resource_missing", param="payout")
                if not po.get("automatic", True):
                    raise _error(400, "Balance transaction history can only be filtered on automatic transfers, "
                                      "not manual.", param="payout")
                coll = _Collection()
        else:
            coll = self._scopes.get(account, {}).get(resource)
        items, pos = coll.ordered() if coll is not None else ([], {})
        keep = _filters(resource, q)
        if extra is not None:
            base, keep = keep, (lambda o: base(o) and extra(o))
        cursor = q.get("starting_after") or q.get("ending_before")
        if cursor:
            if cursor not in pos:
                raise _error(400, f"No such {RESOURCES.get(resource, 'fee_refund').replace('_', ' ')}: '{cursor}'",
                             code="resource_missing", param="starting_after" if q.get("starting_after")
                             else "ending_before")
        page: list[dict] = []
        has_more = False
        if q.get("ending_before"):
            i = pos[cursor] - 1
            while i >= 0:
                if keep(items[i]):
                    if len(page) == limit:
                        has_more = True
                        break
                    page.append(items[i])
                i -= 1
            page.reverse()
        else:
            i = pos[cursor] + 1 if cursor else 0
            while i < len(items):
                if keep(items[i]):
                    if len(page) == limit:
                        has_more = True
                        break
                    page.append(items[i])
                i += 1
        expands = [e[len("data."):] for e in _expands(request) if e.startswith("data.")]
        data = [self._expand(o, expands, account, prefix="") for o in page]
        return {"object": "list", "data": data, "has_more": has_more, "url": url or f"/v1/{resource}"}

    def _expand(self, obj: dict, expands: list[str], account: str | None, prefix: str) -> dict:
        if not expands:
            return obj
        out = dict(obj)
        for field in expands:
            if "." in field:
                continue    # nested expansion: not served
            ref = out.get(field)
            if isinstance(ref, str):
                target = self._by_id.get(account, {}).get(ref)
                if target is not None:
                    out[field] = target
        return out


def _expands(request: Request) -> list[str]:
    return [v for k, v in request.query_params.multi_items() if k == "expand[]" or
            (k.startswith("expand[") and k.endswith("]"))]


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _error(400, f"Invalid integer: {value}", param=name) from None


def _range(q, field: str) -> list[tuple[str, int]]:
    out = []
    if field in q:
        out.append(("eq", _int(q[field], field)))
    for op in _RANGE_OPS:
        key = f"{field}[{op}]"
        if key in q:
            out.append((op, _int(q[key], key)))
    return out


_CMP = {"eq": lambda a, b: a == b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}


def _filters(resource: str, q) -> Callable[[dict], bool]:
    """A predicate for the list filters Stripe documents for ``resource``."""
    checks: list[Callable[[dict], bool]] = []
    for field in ("created",) + (("arrival_date",) if resource == "payouts" else ()):
        for op, value in _range(q, field):
            checks.append(lambda o, f=field, op=op, v=value: _CMP[op](o.get(f, 0), v))
    equal = {"payouts": ("status", "destination"), "balance_transactions": ("type", "source", "currency"),
             "charges": ("customer", "payment_intent"), "refunds": ("charge", "payment_intent"),
             "disputes": ("charge", "payment_intent"), "application_fees": ("charge",),
             "transfers": ("destination", "transfer_group")}.get(resource, ())
    for field in equal:
        if field in q:
            checks.append(lambda o, f=field, v=q[field]: _id_of(o.get(f)) == v)
    if resource == "events":
        types = [v for k, v in q.multi_items() if k.startswith("types[")]
        if "type" in q:
            types.append(q["type"])
        if types:
            checks.append(lambda o: any(fnmatch.fnmatchcase(o.get("type", ""), t) for t in types))
    if not checks:
        return lambda o: True
    return lambda o: all(c(o) for c in checks)


def _id_of(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value
