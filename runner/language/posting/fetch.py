"""Balance transactions from Stripe: cached in the store, fetched within Stripe's read limit.

Webhook events carry ``balance_transaction`` as an id. Fees, net and the applied
rate need ``GET /v1/balance_transactions/{id}`` (``Stripe-Account`` for a connected
account). Every fetch goes through one limiter shared by every worker through the
store (``stripe.fetch.rate_limit`` requests a second; default 100 with a live key,
25 otherwise, as Stripe documents its read limits), and every answer is kept in the
store's key/value cache, so nothing is fetched twice; the payout reconciliation
fills the cache from the lists it reads anyway.

A 429 blocks the limiter for everyone until Stripe's ``Retry-After`` and is tried
again (never an error); a network error or a 5xx is a :class:`FetchError` with
``transient=True`` (the dispatcher retries the plan like any target error); a 404
or a refused key is permanent and says what to fix.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Mapping

from runner.core import jsonio
from runner.core.errors import LedgerflowError

NAMESPACE = "stripe:bt"
LIMIT_KEY = "stripe-read"


class _Throttled(Exception):
    def __init__(self, retry_after: float | None):
        self.retry_after = retry_after


class FetchError(LedgerflowError):
    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


def _cache_key(obj_id: str, account: str | None) -> str:
    return f"{account or 'platform'}/{obj_id}"


def _scope(account: str | None) -> str:
    return f" (Stripe-Account {account})" if account else ""


class StripeObjects:
    """Balance transactions (and a payment intent's charge) by id, cache first."""

    def __init__(self, app: Any, *, client: Any = None, rate_limit: float | None = None, concurrency: int = 8,
                 max_429: int = 20):
        self.app = app
        self._client = client
        raw = ((app.project.raw.get("stripe") or {}).get("fetch") or {}) if app is not None else {}
        self._rate = rate_limit if rate_limit is not None else raw.get("rate_limit")
        self.concurrency = int(raw.get("concurrency", concurrency))
        self.max_429 = max_429
        self.fetched = 0            # API calls that returned an object
        self.throttled = 0          # 429s seen
        self._memo: dict[str, dict] = {}
        self.errors: dict[tuple[str, str | None], FetchError] = {}

    # ---- the Stripe client and the limiter -----------------------------------------

    @property
    def store(self):
        """The cache and the limiter's store, opened on first use: a preview that fetches
        nothing (an event the flow does not book) never imports SQLAlchemy."""
        return self.app.store

    @property
    def client(self):
        if self._client is None:
            from runner.language.stripe_client import stripe_client
            self._client = stripe_client(self.app)
        return self._client

    @property
    def rate(self) -> float:
        if self._rate is None:       # Stripe's read limits: 100/s in live mode, 25/s in test mode
            from runner.language.stripe_config import stripe_settings
            ref = stripe_settings(self.app.project.raw.get("stripe"), self.app.project.file).api_key_ref
            key = self.app.secrets.resolve(ref, "stripe.api_key") if ref else ""
            self._rate = 100 if str(key).startswith(("sk_live", "rk_live")) else 25
        return float(self._rate)

    def _limits(self):
        from runner.store.limiter import Limit
        rate = self.rate
        per = 1.0
        if rate < 1:
            per, rate = 1.0 / rate, 1
        return [Limit(LIMIT_KEY, rate=int(rate), per=per, concurrency=self.concurrency, lease=60.0)]

    def _get(self, path: str, account: str | None, **params: Any) -> dict:
        from runner.store.limiter import RateLimiter, RateLimitTimeout

        limiter = RateLimiter(self.store)
        if account:
            params["stripe_account"] = account
        wait = 0.25
        for _ in range(self.max_429 + 1):
            try:
                slots = limiter.acquire(self._limits(), max_wait=300.0)
            except RateLimitTimeout as exc:       # the shared limit stayed full: the plan is retried later
                raise FetchError(f"GET {path}{_scope(account)}: {exc}", transient=True) from None
            try:
                body = self._request(path, params)
            except _Throttled as t:
                # Stripe's 429 names no Retry-After: back off for every worker, doubling while it lasts
                wait = t.retry_after if t.retry_after is not None else min(wait * 2, 8.0)
                limiter.block(LIMIT_KEY, time.time() + min(max(wait, 0.05), 60.0))
                continue
            finally:
                limiter.release(slots)
            return body
        raise FetchError(f"GET {path}{_scope(account)}: still rate limited (429) after {self.max_429 + 1} tries",
                         transient=True)

    def _request(self, path: str, params: dict) -> dict:
        import stripe

        account = params.get("stripe_account")
        try:
            resp = self.client.raw_request("get", path, **params)
        except stripe.RateLimitError as exc:
            self.throttled += 1
            from runner.language.stripe_client import retry_after
            raise _Throttled(retry_after(exc)) from None
        except stripe.AuthenticationError as exc:
            raise FetchError(f"GET {path}{_scope(account)}: Stripe refused the API key ({exc.http_status}: "
                             f"{exc.user_message}); check stripe.api_key", transient=False) from None
        except stripe.InvalidRequestError as exc:
            raise FetchError(f"GET {path}{_scope(account)}: {exc.http_status} {exc.user_message}",
                             transient=bool(exc.http_status and exc.http_status >= 500)) from None
        except stripe.StripeError as exc:   # connection errors, 5xx: the plan is retried later
            raise FetchError(f"GET {path}{_scope(account)}: {exc.http_status or 'no answer'} "
                             f"{exc.user_message or type(exc).__name__}", transient=True) from None
        self.fetched += 1
        return jsonio.loads(resp.body)

    # ---- balance transactions ------------------------------------------------------

    def prefill(self, bts: Iterable[Mapping[str, Any]], account: str | None) -> int:
        """Cache balance transactions read elsewhere (a payout's list); the number cached."""
        values = {}
        for bt in bts:
            if isinstance(bt, Mapping) and isinstance(bt.get("id"), str):
                plain = {k: v for k, v in bt.items() if k != "source" or not isinstance(v, Mapping)}
                if isinstance(bt.get("source"), Mapping):
                    plain["source"] = bt["source"].get("id")
                key = _cache_key(bt["id"], account)
                self._memo[key] = plain
                values[key] = jsonio.dumps(plain)
        self.store.kv_put_many(NAMESPACE, values)
        return len(values)

    def balance_transactions(self, refs: Iterable[tuple[str, str | None]]) -> dict[tuple[str, str | None], dict]:
        """Many at once: cached ones from the store, the rest fetched concurrently."""
        refs = list(dict.fromkeys(refs))
        out: dict[tuple[str, str | None], dict] = {}
        want = []
        for ref in refs:
            key = _cache_key(*ref)
            if key in self._memo:
                out[ref] = self._memo[key]
            else:
                want.append(ref)
        if want:
            cached = self.store.kv_get_many(NAMESPACE, [_cache_key(*r) for r in want])
            missing = []
            for ref in want:
                raw = cached.get(_cache_key(*ref))
                if raw is not None:
                    out[ref] = self._memo[_cache_key(*ref)] = jsonio.loads(raw)
                else:
                    missing.append(ref)
            if missing:
                out.update(self._fetch_many(missing))
        return out

    def _fetch_many(self, refs: list[tuple[str, str | None]]) -> dict[tuple[str, str | None], dict]:
        """Fetch concurrently (within the limiter); a failed one is left out and its error kept in
        ``self.errors`` (ref -> FetchError)."""
        def one(ref):
            try:
                return ref, self._get(f"/v1/balance_transactions/{ref[0]}", ref[1])
            except FetchError as exc:
                return ref, exc

        workers = max(1, min(self.concurrency, len(refs)))
        if workers == 1:
            pairs = [one(r) for r in refs]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pairs = list(pool.map(one, refs))
        results: dict[tuple[str, str | None], dict] = {}
        by_account: dict[str | None, list[dict]] = {}
        for ref, got in pairs:
            if isinstance(got, FetchError):
                self.errors[ref] = got
                continue
            results[ref] = got
            by_account.setdefault(ref[1], []).append(got)
        for account, bts in by_account.items():
            self.prefill(bts, account)
        return results

    def balance_transaction(self, txn_id: str, account: str | None) -> dict:
        ref = (txn_id, account)
        got = self.balance_transactions([ref])
        if ref not in got:
            raise self.errors.pop(ref, None) or FetchError(
                f"balance transaction {txn_id}{_scope(account)}: not found", transient=True)
        return got[ref]

    def charge(self, charge_id: str, account: str | None) -> dict:
        key = _cache_key(charge_id, account)
        if key not in self._memo:
            self._memo[key] = self._get(f"/v1/charges/{charge_id}", account)
        return self._memo[key]
