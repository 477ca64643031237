"""Reading payouts and their balance transactions from Stripe, page by page.

Calls go through the official SDK's ``StripeClient.raw_request`` and the JSON
body is parsed with ``jsonio`` (exact Decimals, e.g. ``exchange_rate``), so a
page is plain dicts and nothing but the current page is held. A 429 waits
(``Retry-After`` when Stripe sends it, else exponential) and tries again.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Callable, Iterator
from zoneinfo import ZoneInfo

from runner.core import jsonio
from runner.core.errors import LedgerflowError


class StripeReadError(LedgerflowError):
    pass


class StripeSource:
    def __init__(self, client: Any, *, page_size: int = 100, rate_limit_retries: int = 6,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.page_size = page_size
        self.rate_limit_retries = rate_limit_retries
        self.sleep = sleep
        self.requests = 0

    def get(self, path: str, account: str | None = None, **params: Any) -> dict:
        import stripe

        if account:
            params["stripe_account"] = account
        for attempt in range(self.rate_limit_retries + 1):
            try:
                self.requests += 1
                resp = self.client.raw_request("get", path, **params)
                return jsonio.loads(resp.body)
            except stripe.RateLimitError as exc:
                if attempt == self.rate_limit_retries:
                    raise StripeReadError(f"GET {path}{_scope(account)}: still rate limited (429) after "
                                          f"{attempt + 1} tries") from None
                from runner.language.stripe_client import retry_after
                after = retry_after(exc)
                self.sleep(after if after is not None else min(2.0 ** attempt * 0.5, 30.0))
            except stripe.AuthenticationError as exc:
                raise StripeReadError(f"GET {path}{_scope(account)}: Stripe refused the API key (401: "
                                      f"{exc.user_message}); check stripe.api_key") from None
            except stripe.StripeError as exc:
                raise StripeReadError(f"GET {path}{_scope(account)}: {exc.http_status or ''} "
                                      f"{exc.user_message or type(exc).__name__}".replace("  ", " ")) from None
        raise AssertionError("unreachable")

    def pages(self, path: str, account: str | None = None, **params: Any) -> Iterator[list[dict]]:
        """Every page of a list endpoint, newest first, one page in memory at a time."""
        cursor = None
        while True:
            p = dict(params, limit=self.page_size)
            if cursor:
                p["starting_after"] = cursor
            body = self.get(path, account, **p)
            data = body.get("data") or []
            yield data
            if not body.get("has_more") or not data:
                return
            cursor = data[-1]["id"]

    def payouts(self, account: str | None, since: date, until: date | None, tz: str) -> Iterator[dict]:
        """Payouts arriving between ``since`` and ``until`` (inclusive days in ``tz``)."""
        zone = ZoneInfo(tz)
        lo = int(datetime.combine(since, dtime.min, zone).timestamp())
        params: dict[str, Any] = {"arrival_date[gte]": lo}
        if until is not None:
            params["arrival_date[lt]"] = int(datetime.combine(until + timedelta(days=1), dtime.min, zone).timestamp())
        for page in self.pages("/v1/payouts", account, **params):
            yield from page

    def payout(self, account: str | None, payout_id: str) -> dict:
        return self.get(f"/v1/payouts/{payout_id}", account)

    def payout_transactions(self, account: str | None, payout_id: str) -> Iterator[list[dict]]:
        return self.pages("/v1/balance_transactions", account, payout=payout_id, expand=["data.source"])


def _scope(account: str | None) -> str:
    return f" (Stripe-Account {account})" if account else ""
