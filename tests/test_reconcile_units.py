"""Plain-function tests: journals (hypothesis), FX providers, policy errors, the CLI, Prefect artifacts."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from runner.core.fx import CachedProvider, FxError, OpenExchangeRatesProvider, Rate, provider, stripe_rate
from runner.core.money import from_minor
from runner.reconcile.journal import Totals, clearing_lines, convert_lines, summary_lines
from runner.reconcile.policy import Policy, PolicyError, load_policy
from runner.store.fx_rates import RateCache
from tests.support.servers import serve_app

CATEGORIES = ["charge", "refund", "dispute", "dispute_reversal", "fee", "other_adjustment", "transfer",
              "platform_earning"]

txn = st.fixed_dictionaries({
    "reporting_category": st.sampled_from(CATEGORIES),
    "amount": st.integers(-10**9, 10**9),
    "fee": st.integers(-10**6, 10**6),
})


@settings(max_examples=300, deadline=None)
@given(st.lists(txn, min_size=1, max_size=40), st.sampled_from(["usd", "jpy", "bhd", "eur"]))
def test_summary_journal_balances_and_lines_sum_to_the_payout(txns, currency):
    totals = Totals(currency)
    for t in txns:
        totals.add({**t, "net": t["amount"] - t["fee"]}, False)
    policy = Policy(flow="f")
    lines = summary_lines(totals, totals.net, policy)
    assert sum(l.amount for l in lines) == 0
    bank = lines[0]
    assert bank.account == policy.ledger["bank"] and bank.amount == from_minor(totals.net, currency)
    assert -sum(l.amount for l in lines[1:]) == from_minor(totals.net, currency)


@settings(max_examples=200, deadline=None)
@given(st.lists(txn, min_size=1, max_size=20), st.decimals("0.0001", "500", places=4),
       st.sampled_from([("jpy", "USD"), ("usd", "JPY"), ("bhd", "USD"), ("eur", "BHD")]))
def test_converted_journal_still_balances(txns, rate, pair):
    cur, home = pair
    totals = Totals(cur)
    for t in txns:
        totals.add({**t, "net": t["amount"] - t["fee"]}, False)
    policy = Policy(flow="f")
    lines = convert_lines(summary_lines(totals, totals.net, policy), Rate(cur.upper(), home, rate, "ecb", "2026-01-02"),
                          policy)
    assert sum(l.amount for l in lines) == 0
    assert all(l.amount == l.amount.quantize(Decimal(1).scaleb(-{"USD": 2, "JPY": 0, "BHD": 3}[home])) for l in lines)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(txn, st.booleans()), min_size=1, max_size=30),
       st.decimals("-5", "5", places=2))
def test_clearing_journal_balances(txns, fx):
    totals = Totals("usd")
    for t, unbooked in txns:
        totals.add({**t, "net": t["amount"] - t["fee"]}, unbooked)
    totals.fx_diff = fx
    lines = clearing_lines(totals, Policy(flow="f"))
    assert sum(l.amount for l in lines) == 0


def test_stripe_rate_from_a_balance_transaction():
    bt = {"id": "txn_1", "currency": "usd", "exchange_rate": Decimal("1.0800"), "created": 1767268800,
          "source": {"id": "ch_1", "currency": "eur"}}
    r = stripe_rate(bt)
    assert (r.base, r.quote, r.rate, r.source, r.date) == ("EUR", "USD", Decimal("1.0800"), "stripe", "2026-01-01")
    assert r.convert_rounded(Decimal("50.00")) == Decimal("54.00")
    assert stripe_rate({**bt, "exchange_rate": None}) is None
    with pytest.raises(FxError, match="expand data.source"):
        stripe_rate({**bt, "source": "ch_1"})


def _oxr_app(calls):
    async def historical(request):
        calls.append(request.path_params["day"])
        if request.query_params.get("app_id") != "oxr-test-id":
            return JSONResponse({"error": True, "status": 401, "message": "invalid_app_id",
                                 "description": "Invalid App ID provided."}, 401)
        return JSONResponse({"base": "USD", "timestamp": 1767225600,
                             "rates": {"EUR": 0.925, "JPY": 157.2, "BHD": 0.376}})
    return Starlette(routes=[Route("/api/historical/{day}.json", historical)])


def test_open_exchange_rates_through_the_store_cache(store):
    calls: list[str] = []
    with serve_app(_oxr_app(calls)) as srv:
        p = provider("openexchangerates", {}, cache=RateCache(store), environ={"OPENEXCHANGERATES_APP_ID": "oxr-test-id"},
                     base_url=srv.url + "/api")
        assert isinstance(p, CachedProvider)
        r = p.rate("EUR", "JPY", date(2026, 1, 2))
        assert r.rate == (Decimal("157.2") / Decimal("0.925")).quantize(Decimal("1e-10"))
        assert (r.source, r.date) == ("openexchangerates", "2026-01-02")
        again = provider("openexchangerates", {}, cache=RateCache(store), environ={"OPENEXCHANGERATES_APP_ID": "oxr-test-id"},
                         base_url=srv.url + "/api").rate("EUR", "JPY", date(2026, 1, 2))
        assert again.rate == r.rate and calls == ["2026-01-02"]          # the second came from fx_rates
        bad = OpenExchangeRatesProvider("wrong", srv.url + "/api")
        with pytest.raises(FxError, match="401: Invalid App ID"):
            bad.rate("EUR", "USD", date(2026, 1, 3))
    with pytest.raises(FxError, match="OPENEXCHANGERATES_APP_ID is not set"):
        provider("openexchangerates", {}, environ={})


def test_ecb_is_offline_and_pegged_currencies_fall_back_to_fixed(store):
    from runner.reconcile.engine import rate_provider
    policy = Policy(flow="f", fx_rates={"BHD/USD": "2.6596"})
    chain = rate_provider(policy, {}, store)
    assert chain.rate("EUR", "USD", date(2024, 3, 1)).source == "ecb"
    bhd = chain.rate("BHD", "USD", date(2024, 3, 1))
    assert (bhd.rate, bhd.source) == (Decimal("2.6596"), "fixed")
    with pytest.raises(FxError, match="no rate XOF/USD"):
        chain.rate("XOF", "USD", date(2024, 3, 1))


def _flow(reconcile):
    return SimpleNamespace(name="f", file="flows/f.yaml", raw={"reconcile": reconcile}, vars={})


@pytest.mark.parametrize("section, message", [
    ({"mode": "daily"}, r"reconcile.mode: expected one of per_transaction, summary"),
    ({"accounts": ["acme"]}, r"reconcile.accounts\[0\]: expected platform, connected or an acct_"),
    ({"fx": {"tolerance": "lots"}}, r"reconcile.fx.tolerance: expected a fraction"),
    ({"page_size": 500}, r"reconcile.page_size: expected an integer 1..100"),
    ({"booked_amount": {"csv.row": {"currency": "c"}}}, r"reconcile.booked_amount.csv.row"),
    (None, r"has no reconcile section"),
])
def test_policy_errors_name_the_field(section, message):
    with pytest.raises(PolicyError, match=message):
        load_policy(_flow(section), {"home_currency": "USD"})


def test_policy_defaults_include_connected_accounts():
    p = load_policy(_flow({"accounts": ["platform", "connected"]}), {"home_currency": "EUR"}, ["acct_1A"])
    assert p.accounts == [None, "acct_1A"] and p.home_currency == "EUR" and p.mode == "per_transaction"


def test_validate_checks_the_reconcile_section(project_dir):
    from runner.core.errors import SpecError
    from runner.language.spec import load_flow, load_project
    src = (project_dir / "flows" / "payout-reconciliation.yaml").read_text()
    bad = project_dir / "flows" / "bad-recon.yaml"
    bad.write_text(src.replace("mode: per_transaction", "mode: daily").replace("unbooked: journal", "unbooked: x"))
    with pytest.raises(SpecError) as e:
        load_flow(bad, load_project())
    text = str(e.value)
    assert "bad-recon.yaml:16:" in text and "reconcile.mode: 'daily' is not one of" in text
    assert "reconcile.unbooked" in text


def test_a_movement_is_matched_only_when_every_set_of_books_has_it():
    from runner.reconcile.booked import PostedBooking
    from runner.reconcile.classify import BOOKED_LATE, MATCHED, classify
    from runner.reconcile.policy import Policy
    txn = {"id": "txn_m", "amount": 2000, "fee": 88, "net": 1912, "currency": "usd", "reporting_category": "charge",
           "source": {"id": "ch_m", "object": "charge", "currency": "usd", "amount": 2000}, "created": 1767225600}

    def booking(i, conn, state, error=None):
        return PostedBooking(i, state, f"{conn}-flow", conn, "charge", "ch_m", "txn_m", "ch_m", "20.00", error)

    sent = [booking(1, "csv", "sent"), booking(2, "quickbooks_online", "sent")]
    assert classify(txn, {}, Policy(flow="r"), {"txn_m": sent}).kind == MATCHED
    one_dead = [booking(1, "csv", "sent"), booking(2, "quickbooks_online", "dead", "6000 closed period")]
    check = classify(txn, {}, Policy(flow="r"), {"txn_m": one_dead})
    assert check.kind == BOOKED_LATE and check.fix == "ledgerflow dlq replay 2" and "quickbooks_online" in check.detail
    assert check.fee_booked          # its fee is that booking's, not the payout journal's
    by_hand = [booking(1, "csv", "sent"), booking(2, "quickbooks_online", "discarded")]
    assert classify(txn, {}, Policy(flow="r"), {"txn_m": by_hand}).kind == MATCHED
