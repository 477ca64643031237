"""The Stripe stand-in behaves as Stripe documents, through the official SDK."""

from __future__ import annotations

import pytest
import stripe

from tests.standins.stripe_api import StripeStandin
from tests.support.servers import serve_app


@pytest.fixture(scope="module")
def served():
    s = StripeStandin()
    for i in range(250):
        s.add({"id": f"ch_{i:04d}", "object": "charge", "amount": 100 + i, "currency": "usd", "created": 1000 + i})
        s.add({"id": f"txn_{i:04d}", "object": "balance_transaction", "amount": 100 + i, "fee": 3, "net": 97 + i,
               "currency": "usd", "created": 1000 + i, "source": f"ch_{i:04d}", "reporting_category": "charge",
               "type": "charge"}, payout="po_auto")
    s.add({"id": "po_auto", "object": "payout", "amount": 1, "currency": "usd", "created": 2000,
           "arrival_date": 3000, "automatic": True, "status": "paid"})
    s.add({"id": "po_manual", "object": "payout", "amount": 1, "currency": "usd", "created": 2001,
           "arrival_date": 5000, "automatic": False, "status": "in_transit"})
    s.add({"id": "py_1", "object": "charge", "amount": 5, "currency": "eur", "created": 10}, account="acct_1Seller")
    with serve_app(s.app) as srv:
        yield s, stripe.StripeClient("sk_test_standin", base_addresses={"api": srv.url}, max_network_retries=0), srv.url


def test_cursor_pagination_both_ways(served):
    _, client, _ = served
    first = client.v1.balance_transactions.list(params={"payout": "po_auto", "limit": 100})
    assert (len(first.data), first.has_more, first.data[0].id, first.object) == (100, True, "txn_0249", "list")
    nxt = client.v1.balance_transactions.list(params={"payout": "po_auto", "limit": 100,
                                                      "starting_after": first.data[-1].id})
    assert nxt.data[0].id == "txn_0149"
    back = client.v1.balance_transactions.list(params={"payout": "po_auto", "limit": 10,
                                                       "ending_before": nxt.data[0].id})
    assert [t.id for t in back.data] == [f"txn_{i:04d}" for i in range(159, 149, -1)] and back.has_more
    assert sum(1 for _ in first.auto_paging_iter()) == 250


def test_filters_expand_and_retrieve(served):
    _, client, _ = served
    page = client.v1.charges.list(params={"created": {"gte": 1100, "lte": 1104}})
    assert [c.id for c in page.data] == ["ch_0104", "ch_0103", "ch_0102", "ch_0101", "ch_0100"]
    bt = client.v1.balance_transactions.list(params={"payout": "po_auto", "limit": 1, "expand": ["data.source"]})
    assert bt.data[0].source.object == "charge" and bt.data[0].source.amount == 349
    assert [p.id for p in client.v1.payouts.list(params={"status": "paid"}).data] == ["po_auto"]
    assert [p.id for p in client.v1.payouts.list(params={"arrival_date": {"gte": 4000}}).data] == ["po_manual"]
    assert client.v1.payouts.retrieve("po_auto").amount == 1
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.payouts.retrieve("po_nope")
    assert e.value.http_status == 404 and e.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError, match="only be filtered on automatic"):
        client.v1.balance_transactions.list(params={"payout": "po_manual"})
    with pytest.raises(stripe.InvalidRequestError, match="between 1 and 100"):
        client.v1.charges.list(params={"limit": 101})


def test_stripe_account_scoping(served):
    _, client, _ = served
    scoped = client.v1.charges.list(options={"stripe_account": "acct_1Seller"})
    assert [c.id for c in scoped.data] == ["py_1"]
    assert "py_1" not in [c.id for c in client.v1.charges.list(params={"limit": 100}).data]
    with pytest.raises(stripe.PermissionError) as e:
        client.v1.charges.list(options={"stripe_account": "acct_1Unknown"})
    assert e.value.http_status == 403 and e.value.error.code == "account_invalid"


def test_auth_and_injected_failures(served):
    s, client, url = served
    with pytest.raises(stripe.AuthenticationError) as e:
        stripe.StripeClient("sk_test_wrongwrongwrong", base_addresses={"api": url}).v1.payouts.list()
    assert e.value.http_status == 401 and "Invalid API Key provided" in e.value.user_message
    s.inject(429, retry_after=3, path_prefix="/v1/payouts")
    with pytest.raises(stripe.RateLimitError) as e:
        client.v1.payouts.list()
    assert e.value.error.code == "rate_limit" and e.value.headers["retry-after"] == "3"
    s.inject(500)
    with pytest.raises(stripe.APIError) as e:
        client.v1.payouts.list()
    assert e.value.http_status == 500 and e.value.error.type == "api_error"
    assert client.v1.payouts.list().data
