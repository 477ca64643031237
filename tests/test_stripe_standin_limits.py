"""The Stripe stand-in's rate limiter, latency, counters, Connect-scoped retrieval and fee refunds."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import stripe

from tests.standins.stripe_api import DEFAULT_KEY, StripeStandin, path_prefix
from tests.support.servers import serve_app

AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _seed(s: StripeStandin) -> StripeStandin:
    s.add({"id": "txn_p1", "object": "balance_transaction", "amount": 100, "fee": 0, "net": 100,
           "currency": "usd", "created": 10, "source": "ch_p1", "reporting_category": "charge", "type": "charge"})
    s.add({"id": "txn_c1", "object": "balance_transaction", "amount": 500, "fee": 10, "net": 490,
           "currency": "eur", "created": 11, "source": "py_c1", "reporting_category": "charge", "type": "payment"},
          account="acct_1Conn")
    s.add({"id": "fee_1", "object": "application_fee", "amount": 50, "amount_refunded": 20, "currency": "usd",
           "created": 12, "account": "acct_1Conn", "charge": "py_c1", "balance_transaction": "txn_fee1"})
    s.add({"id": "txn_fr1", "object": "balance_transaction", "amount": -20, "fee": 0, "net": -20,
           "currency": "usd", "created": 13, "source": "fr_1", "reporting_category": "platform_earning_refund",
           "type": "application_fee_refund"})
    s.add({"id": "fr_1", "object": "fee_refund", "amount": 20, "balance_transaction": "txn_fr1", "created": 13,
           "currency": "usd", "fee": "fee_1", "metadata": {}})
    return s


def _client(s: StripeStandin) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=s.app), base_url="http://stripe.test", headers=AUTH)


def test_rate_limit_per_key_answers_stripes_429_and_refills():
    clock = FakeClock()
    s = _seed(StripeStandin(rate_limit=5, clock=clock))

    async def go():
        async with _client(s) as c:
            codes = [(await c.get("/v1/balance_transactions/txn_p1")).status_code for _ in range(7)]
            r = await c.get("/v1/balance_transactions")
            body = r.json()
            clock.now += 0.5                       # 2.5 tokens back
            later = [(await c.get("/v1/balance_transactions")).status_code for _ in range(3)]
            return codes, r, body, later

    codes, r, body, later = asyncio.run(go())
    assert codes == [200] * 5 + [429] * 2
    assert r.status_code == 429 and "Request-Id" in r.headers and "Retry-After" not in r.headers
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "rate_limit"
    assert "rate limit" in body["error"]["message"].lower()
    assert later == [200, 200, 429]
    st = s.stats()
    assert st["requests"] == 11 and st["limited"] == 4 and st["served"] == 7
    assert st["by_prefix"]["/v1/balance_transactions"] == {"requests": 11, "limited": 4, "errors": 0}


def test_rate_limit_per_account_buckets_and_sdk_error():
    clock = FakeClock()
    s = _seed(StripeStandin(rate_limit=2, rate_limit_per="account", rate_limit_retry_after=1, clock=clock))
    with serve_app(s.app) as srv:
        client = stripe.StripeClient(DEFAULT_KEY, base_addresses={"api": srv.url}, max_network_retries=0)
        for _ in range(2):
            client.v1.balance_transactions.retrieve("txn_p1")
        with pytest.raises(stripe.RateLimitError) as e:
            client.v1.balance_transactions.retrieve("txn_p1")
        assert e.value.http_status == 429 and e.value.error.code == "rate_limit"
        assert e.value.headers["retry-after"] == "1"
        # the connected account's requests have their own bucket
        for _ in range(2):
            assert client.v1.balance_transactions.retrieve("txn_c1", options={"stripe_account": "acct_1Conn"}).net \
                == 490
    assert s.stats()["limited"] == 1


def test_no_limit_by_default():
    s = _seed(StripeStandin())

    async def go():
        async with _client(s) as c:
            return [(await c.get("/v1/balance_transactions/txn_p1")).status_code for _ in range(300)]

    assert set(asyncio.run(go())) == {200}
    assert s.stats()["limited"] == 0 and s.stats()["peak_per_second"] >= 1


def test_latency_is_async_so_requests_overlap():
    s = _seed(StripeStandin(latency=0.1))

    async def go():
        async with _client(s) as c:
            t = time.perf_counter()
            one = await c.get("/v1/balance_transactions/txn_p1")
            single = time.perf_counter() - t
            t = time.perf_counter()
            many = await asyncio.gather(*(c.get("/v1/balance_transactions/txn_p1") for _ in range(20)))
            return one, single, many, time.perf_counter() - t

    one, single, many, elapsed = asyncio.run(go())
    assert one.status_code == 200 and single >= 0.1
    assert all(r.status_code == 200 for r in many) and elapsed < 1.0    # 20 x 100 ms, overlapped


def test_balance_transaction_retrieve_is_scoped_by_stripe_account():
    s = _seed(StripeStandin())

    async def go():
        async with _client(s) as c:
            scoped = await c.get("/v1/balance_transactions/txn_c1", headers={"Stripe-Account": "acct_1Conn"})
            unscoped = await c.get("/v1/balance_transactions/txn_c1")
            wrong = await c.get("/v1/balance_transactions/txn_p1", headers={"Stripe-Account": "acct_1Conn"})
            return scoped, unscoped, wrong

    scoped, unscoped, wrong = asyncio.run(go())
    assert scoped.status_code == 200 and scoped.json()["currency"] == "eur"
    assert unscoped.status_code == 404 and unscoped.json()["error"]["code"] == "resource_missing"
    assert wrong.status_code == 404
    st = s.stats()
    assert st["errors"] == 2 and st["by_prefix"]["/v1/balance_transactions"]["errors"] == 2


def test_application_fee_refunds_nested_and_expandable():
    s = _seed(StripeStandin())

    async def go():
        async with _client(s) as c:
            lst = await c.get("/v1/application_fees/fee_1/refunds")
            one = await c.get("/v1/application_fees/fee_1/refunds/fr_1")
            missing = await c.get("/v1/application_fees/fee_nope/refunds")
            top = await c.get("/v1/fee_refunds")
            bt = await c.get("/v1/balance_transactions/txn_fr1", params={"expand[]": "source"})
            return lst, one, missing, top, bt

    lst, one, missing, top, bt = asyncio.run(go())
    assert lst.json()["url"] == "/v1/application_fees/fee_1/refunds" and [o["id"] for o in lst.json()["data"]] \
        == ["fr_1"]
    assert one.json()["amount"] == 20
    assert missing.status_code == 404 and top.status_code == 404
    assert bt.json()["source"]["object"] == "fee_refund"


def test_path_prefix():
    assert path_prefix("/v1/balance_transactions/txn_1") == "/v1/balance_transactions"
    assert path_prefix("/v1/events") == "/v1/events"
    assert path_prefix("/v1/application_fees/fee_1/refunds") == "/v1/application_fees"
