"""The accounting model's postings, tested from ACCOUNTING.md's table (not from the code).

Each test builds a Stripe object and its balance transaction the way Stripe sends them
and checks the lines the spec asks for: accounts, signs (debit > 0, credit < 0), amounts
in the home currency, the key the movement is booked under, and what the memo keeps.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.core.fx import Rate
from runner.core.money import from_minor, quantum
from runner.language.posting.build import build_posting
from runner.language.posting.events import movement_of
from runner.language.posting.fetch import FetchError
from runner.language.posting.model import (
    DocumentView,
    Line,
    Posting,
    PostingError,
    UnbalancedPosting,
    effective_rate,
    inverse_rate,
)
from runner.language.posting.policy import AccountingPolicy, PolicyError, load_accounting
from runner.language.posting.source import PostingSource

D = Decimal
T = 1767225600          # 2026-01-01T00:00:00Z
POLICY = AccountingPolicy()
PRINCIPAL = AccountingPolicy(destination_charges="principal")


def bt(txn_id, amount, fee=0, *, currency="usd", category, fee_details=None, net=None, rate=None, source=None,
       type_=None, created=T):
    out = {"id": txn_id, "object": "balance_transaction", "amount": amount, "fee": fee,
           "net": amount - fee if net is None else net, "currency": currency, "reporting_category": category,
           "type": type_ or category, "created": created, "exchange_rate": rate, "source": source,
           "fee_details": fee_details if fee_details is not None else
           ([{"amount": fee, "currency": currency, "type": "stripe_fee", "description": "Stripe processing fees"}]
            if fee else [])}
    return out


def charge(cid="ch_1", amount=10000, currency="usd", **extra):
    return {"id": cid, "object": "charge", "amount": amount, "currency": currency, "created": T,
            "customer": "cus_1", **extra}


def lines(p: Posting) -> dict[str, Decimal]:
    """account -> signed amount (summed when an account appears twice)."""
    out: dict[str, Decimal] = {}
    for ln in p.lines:
        out[ln.account] = out.get(ln.account, D(0)) + ln.amount
    return out


def balanced(p: Posting) -> bool:
    return sum(ln.debit for ln in p.lines) == sum(ln.credit for ln in p.lines) and \
        sum((ln.amount for ln in p.lines), D(0)) == 0


def fixed_rates(table):
    def rates(base, quote, on):
        return Rate(base, quote, D(table[f"{base}/{quote}"]), "fixed", on)
    return rates


# ---- the postings table, one movement at a time --------------------------------------------------

def test_charge_gross_to_clearing_and_sales_fee_to_stripe_fees():
    p = build_posting(charge(), bt("txn_1", 10000, 320, category="charge", source="ch_1"), POLICY)
    assert lines(p) == {"Stripe Clearing": D("96.80"), "Stripe Fees": D("3.20"), "Sales": D("-100.00")}
    assert (p.kind, p.key, p.books, p.currency, p.date) == ("charge", "ch_1", "platform", "USD", "2026-01-01")
    assert (p.gross, p.fee, p.net) == (D("100.00"), D("3.20"), D("96.80"))
    assert p.balance_transaction == "txn_1" and p.customer == "cus_1" and p.account is None
    assert balanced(p) and p.home_amount == D("100.00") and not p.converted
    assert [ln.role for ln in p.fee_lines] == ["fee"]


def test_refund_to_sales_refunds_out_of_clearing_keyed_by_refund_id():
    re = {"id": "re_1", "object": "refund", "amount": 3000, "currency": "usd", "charge": "ch_1", "created": T,
          "balance_transaction": "txn_r1"}
    p = build_posting(re, bt("txn_r1", -3000, category="refund", source="re_1"), POLICY)
    assert lines(p) == {"Sales Refunds": D("30.00"), "Stripe Clearing": D("-30.00")}
    assert (p.kind, p.key, p.gross, p.net) == ("refund", "re_1", D("30.00"), D("-30.00"))
    assert balanced(p)


def test_refund_with_its_fee_returned_credits_stripe_fees():
    re = {"id": "re_2", "object": "refund", "amount": 3000, "currency": "usd", "created": T}
    p = build_posting(re, bt("txn_r2", -3000, -90, category="refund"), POLICY)
    # refund: Sales Refunds / Clearing; refund of a fee: Clearing / Stripe Fees
    assert lines(p) == {"Sales Refunds": D("30.00"), "Stripe Fees": D("-0.90"), "Stripe Clearing": D("-29.10")}
    assert p.fee == D("-0.90") and balanced(p)


def test_dispute_withdrawal_books_chargeback_and_dispute_fee_keyed_by_its_balance_transaction():
    du = {"id": "du_1", "object": "dispute", "amount": 5000, "currency": "usd", "charge": "ch_1", "created": T}
    txn = bt("txn_d1", -5000, 1500, category="dispute", type_="adjustment", source="du_1",
             fee_details=[{"amount": 1500, "currency": "usd", "type": "stripe_fee", "description": "Dispute fee"}])
    p = build_posting(du, txn, POLICY)
    assert lines(p) == {"Chargebacks": D("50.00"), "Dispute Fees": D("15.00"), "Stripe Clearing": D("-65.00")}
    assert (p.kind, p.key, p.gross, p.fee) == ("dispute", "txn_d1", D("50.00"), D("15.00"))
    assert {ln.role for ln in p.fee_lines} == {"dispute_fee"}


def test_dispute_reversal_with_the_fee_returned_credits_chargebacks_and_dispute_fees():
    du = {"id": "du_1", "object": "dispute", "amount": 5000, "currency": "usd", "created": T}
    txn = bt("txn_d2", 5000, -1500, category="dispute_reversal", type_="adjustment", source="du_1",
             fee_details=[{"amount": -1500, "currency": "usd", "type": "stripe_fee", "description": "Dispute fee"}])
    p = build_posting(du, txn, POLICY)
    assert lines(p) == {"Stripe Clearing": D("65.00"), "Chargebacks": D("-50.00"), "Dispute Fees": D("-15.00")}
    assert (p.kind, p.key) == ("dispute_reversal", "txn_d2") and balanced(p)


def test_dispute_reversal_without_a_fee_returned_leaves_dispute_fees_alone():
    du = {"id": "du_1", "object": "dispute", "amount": 5000, "currency": "usd", "created": T}
    p = build_posting(du, bt("txn_d3", 5000, category="dispute_reversal"), POLICY)
    assert lines(p) == {"Stripe Clearing": D("50.00"), "Chargebacks": D("-50.00")}


def test_platform_earning_and_its_refund_are_application_fee_revenue():
    fee = {"id": "fee_1", "object": "application_fee", "amount": 200, "currency": "usd", "created": T}
    p = build_posting(fee, bt("txn_f1", 200, category="platform_earning", type_="application_fee"), POLICY)
    assert lines(p) == {"Stripe Clearing": D("2.00"), "Application Fee Revenue": D("-2.00")}
    assert (p.kind, p.key) == ("platform_earning", "fee_1")
    fr = {"id": "fr_1", "object": "fee_refund", "amount": 50, "currency": "usd", "created": T}
    r = build_posting(fr, bt("txn_fr1", -50, category="platform_earning_refund",
                             type_="application_fee_refund"), POLICY)
    assert lines(r) == {"Application Fee Revenue": D("0.50"), "Stripe Clearing": D("-0.50")}
    assert (r.kind, r.key) == ("platform_earning_refund", "fr_1")


def test_transfer_agent_to_connected_accounts_payable_principal_to_cost_of_sales():
    tr = {"id": "tr_1", "object": "transfer", "amount": 8000, "currency": "usd", "created": T,
          "destination": "acct_x"}
    txn = bt("txn_t1", -8000, category="transfer")
    agent = build_posting(tr, txn, POLICY)
    assert lines(agent) == {"Connected Accounts Payable": D("80.00"), "Stripe Clearing": D("-80.00")}
    assert (agent.kind, agent.key, agent.books) == ("transfer", "tr_1", "platform")
    principal = build_posting(tr, txn, PRINCIPAL)
    assert lines(principal) == {"Cost of Sales": D("80.00"), "Stripe Clearing": D("-80.00")}


def test_destination_charge_agent_keeps_only_the_application_fee_as_revenue_principal_books_gross():
    # transfer_data[amount]: Stripe transfers 88.00; the 12.00 it keeps is the platform's revenue
    ch = charge("ch_d1", 10000, transfer_data={"destination": "acct_x", "amount": 8800})
    txn = bt("txn_c1", 10000, 320, category="charge")
    agent = build_posting(ch, txn, POLICY)
    assert lines(agent) == {"Stripe Clearing": D("96.80"), "Stripe Fees": D("3.20"),
                            "Connected Accounts Payable": D("-88.00"), "Application Fee Revenue": D("-12.00")}
    assert agent.books == "platform" and balanced(agent)
    principal = build_posting(ch, txn, PRINCIPAL)
    assert lines(principal) == {"Stripe Clearing": D("96.80"), "Stripe Fees": D("3.20"), "Sales": D("-100.00")}


def _ledger(*postings: Posting) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for p in postings:
        for acc, amt in lines(p).items():
            total[acc] = total.get(acc, D(0)) + amt
    return {k: v for k, v in total.items() if v}


def test_destination_charge_with_application_fee_amount_agent_books_the_fee_once_and_clears_payable():
    # Stripe (Connect "Collect fees", destination charges with application_fee_amount): the platform's balance
    # gets the charge (+gross), the transfer of the full amount (-gross) and the application fee (+fee).
    ch = charge("ch_d2", 10000, transfer_data={"destination": "acct_x"}, application_fee_amount=1200)
    tr = {"id": "tr_d2", "object": "transfer", "amount": 10000, "currency": "usd", "created": T}
    fee = {"id": "fee_d2", "object": "application_fee", "amount": 1200, "currency": "usd", "created": T}
    books = _ledger(build_posting(ch, bt("txn_c2", 10000, 320, category="charge"), POLICY),
                    build_posting(tr, bt("txn_t2", -10000, category="transfer"), POLICY),
                    build_posting(fee, bt("txn_f2", 1200, category="platform_earning"), POLICY))
    assert books == {"Stripe Clearing": D("8.80"), "Stripe Fees": D("3.20"), "Application Fee Revenue": D("-12.00")}


def test_destination_charge_with_transfer_data_amount_agent_revenue_is_what_the_platform_keeps():
    ch = charge("ch_d3", 10000, transfer_data={"destination": "acct_x", "amount": 8500})
    tr = {"id": "tr_d3", "object": "transfer", "amount": 8500, "currency": "usd", "created": T}
    books = _ledger(build_posting(ch, bt("txn_c3", 10000, 320, category="charge"), POLICY),
                    build_posting(tr, bt("txn_t3", -8500, category="transfer"), POLICY))
    assert books == {"Stripe Clearing": D("11.80"), "Stripe Fees": D("3.20"),
                     "Application Fee Revenue": D("-15.00")}


def test_payout_moves_clearing_to_bank_and_a_failed_payout_moves_it_back():
    po = {"id": "po_1", "object": "payout", "amount": 50000, "currency": "usd", "created": T}
    p = build_posting(po, bt("txn_p1", -50000, category="payout"), POLICY)
    assert lines(p) == {"Operating Bank": D("500.00"), "Stripe Clearing": D("-500.00")}
    assert (p.kind, p.key) == ("payout", "po_1")
    back = build_posting(po, bt("txn_pf1", 50000, category="payout_reversal", type_="payout_failure"), POLICY)
    assert lines(back) == {"Stripe Clearing": D("500.00"), "Operating Bank": D("-500.00")}
    assert (back.kind, back.key) == ("payout_reversal", "txn_pf1")     # not the payout's key: both are booked


@pytest.mark.parametrize("amount, clearing", [(-1234, D("-12.34")), (1234, D("12.34"))])
def test_other_adjustment_to_the_mapped_account_either_way(amount, clearing):
    obj = {"id": "adj_1", "object": "balance_transaction", "created": T}
    p = build_posting(obj, bt("txn_a1", amount, category="other_adjustment", type_="adjustment"), POLICY)
    assert lines(p) == {"Stripe Clearing": clearing, "Stripe Adjustments": -clearing}
    custom = AccountingPolicy(accounts={"adjustments": "Misc Stripe"})
    assert "Misc Stripe" in lines(build_posting(obj, bt("txn_a1", amount, category="other_adjustment"), custom))


def test_connected_accounts_books_application_fee_to_platform_fees_stripe_fee_to_stripe_fees():
    ch = charge("py_1", 10000, application_fee_amount=300)
    txn = bt("txn_c9", 10000, 350, category="charge", fee_details=[
        {"amount": 50, "currency": "usd", "type": "stripe_fee", "description": "Stripe processing fees"},
        {"amount": 300, "currency": "usd", "type": "application_fee", "application": "ca_1",
         "description": "Application fee"}])
    p = build_posting(ch, txn, POLICY, account="acct_x")
    assert lines(p) == {"Stripe Clearing": D("96.50"), "Stripe Fees": D("0.50"), "Platform Fees": D("3.00"),
                        "Sales": D("-100.00")}
    assert (p.books, p.account) == ("acct_x", "acct_x") and "[acct_x]" in p.memo
    assert {ln.role for ln in p.fee_lines} == {"fee", "platform_fee"} and p.fee == D("3.50")


# ---- currencies ----------------------------------------------------------------------------------

def test_presentment_other_than_settlement_books_stripes_settled_numbers_and_keeps_its_rate():
    ch = charge("ch_eur", 1000, "eur")
    txn = bt("txn_eur", 1087, 62, category="charge", rate=1.087)        # 10.00 EUR at Stripe's 1.087
    p = build_posting(ch, txn, POLICY)
    assert lines(p) == {"Stripe Clearing": D("10.25"), "Stripe Fees": D("0.62"), "Sales": D("-10.87")}
    assert (p.presentment_currency, p.presentment_amount, p.exchange_rate) == ("EUR", D("10.00"), D("1.087"))
    assert (p.settlement_currency, p.settlement_amount, p.home_rate) == ("USD", D("10.87"), None)
    assert "EUR 10.00 at 1.087" in p.memo and p.converted
    assert not any(ln.role == "fx" for ln in p.lines)                  # no conversion of ours


def test_presentment_other_than_settlement_without_stripes_rate_is_refused():
    with pytest.raises(PostingError, match="without an exchange_rate"):
        build_posting(charge("ch_eur", 1000, "eur"), bt("txn_eur", 1087, category="charge"), POLICY)


def test_settlement_other_than_home_converts_each_line_once_remainder_to_fx_and_records_the_rate():
    ch = charge("ch_e", 1005, "eur")
    txn = bt("txn_e", 1005, 35, currency="eur", category="charge")
    p = build_posting(ch, txn, POLICY, rates=fixed_rates({"EUR/USD": "1.1"}))
    # 9.70 x 1.1 = 10.67; 0.35 x 1.1 = 0.385 -> 0.38; 10.05 x 1.1 = 11.055 -> 11.06: one cent left over
    assert lines(p) == {"Stripe Clearing": D("10.67"), "Stripe Fees": D("0.38"), "Sales": D("-11.06"),
                        "FX Gain/Loss": D("0.01")}
    assert p.home_rate == {"rate": "1.1", "rate_source": "fixed", "rate_date": "2026-01-01"}
    assert "EUR->USD 1.1 fixed 2026-01-01" in p.memo
    assert (p.currency, p.settlement_currency, p.settlement_amount) == ("USD", "EUR", D("10.05"))
    assert p.gross == D("11.06") and balanced(p)


def test_settlement_other_than_home_without_a_rate_provider_is_refused():
    with pytest.raises(PostingError, match="no rate provider"):
        build_posting(charge("ch_e", 1005, "eur"), bt("txn_e", 1005, currency="eur", category="charge"), POLICY)


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(1, 99_999_999), fee_share=st.integers(0, 100),
       rate=st.decimals(D("0.0001"), D("500"), places=6), cur=st.sampled_from(["eur", "gbp", "jpy", "bhd", "isk"]))
def test_conversion_rounds_each_line_once_and_always_balances(amount, fee_share, rate, cur):
    amount = amount - amount % 10 if cur == "bhd" else amount - amount % 100 if cur == "isk" else amount
    fee = amount * fee_share // 100
    if cur == "bhd":
        fee -= fee % 10
    if cur == "isk":
        fee -= fee % 100
    rates = fixed_rates({f"{cur.upper()}/USD": str(rate)})
    p = build_posting(charge("ch_h", amount, cur), bt("txn_h", amount, fee, currency=cur, category="charge"),
                      POLICY, rates=rates)
    assert balanced(p)
    for ln in p.lines:
        assert ln.amount == ln.amount.quantize(D("0.01"))
    settled = {"clearing": from_minor(amount - fee, cur), "fee": from_minor(fee, cur),
               "revenue": -from_minor(amount, cur)}
    for ln in p.lines:
        if ln.role != "fx":
            assert ln.amount == (settled[ln.role] * rate).quantize(D("0.01"), ROUND_HALF_EVEN)
    fx = [ln for ln in p.lines if ln.role == "fx"]
    assert len(fx) <= 1 and all(ln.account == "FX Gain/Loss" for ln in fx)


def test_zero_decimal_jpy_books_whole_yen():
    p = build_posting(charge("ch_jpy", 3000, "jpy"), bt("txn_j", 3000, 110, currency="jpy", category="charge"),
                      AccountingPolicy(home_currency="JPY"))
    assert lines(p) == {"Stripe Clearing": D("2890"), "Stripe Fees": D("110"), "Sales": D("-3000")}
    assert p.presentment_amount == D("3000")
    # a yen charge settled in USD: the presentment amount is whole yen, the lines Stripe's dollars
    q = build_posting(charge("ch_jpy2", 3000, "jpy"), bt("txn_j2", 2010, 88, category="charge", rate=0.0067),
                      POLICY)
    assert (q.presentment_amount, q.gross) == (D("3000"), D("20.10"))
    assert "JPY 3000 at 0.0067" in q.memo


def test_three_decimal_bhd_keeps_fils_and_converts_to_home():
    p = build_posting(charge("ch_bhd", 322860, "bhd"), bt("txn_b", 322860, 9690, currency="bhd", category="charge"),
                      POLICY, rates=fixed_rates({"BHD/USD": "2.6596"}))
    assert p.presentment_amount == D("322.860") and p.settlement_amount == D("322.860")
    assert p.gross == D("858.68") and balanced(p)      # 322.860 x 2.6596 = 858.678456
    bhd_home = build_posting(charge("ch_bhd", 322860, "bhd"),
                             bt("txn_b", 322860, 9690, currency="bhd", category="charge"),
                             AccountingPolicy(home_currency="BHD"))
    assert lines(bhd_home) == {"Stripe Clearing": D("313.170"), "Stripe Fees": D("9.690"), "Sales": D("-322.860")}


def test_isk_is_two_decimal_in_stripes_api_and_booked_in_whole_kronur():
    p = build_posting(charge("ch_isk", 50000, "isk"), bt("txn_i", 50000, 1500, currency="isk", category="charge"),
                      AccountingPolicy(home_currency="ISK"))
    assert lines(p) == {"Stripe Clearing": D("485"), "Stripe Fees": D("15"), "Sales": D("-500")}
    assert p.presentment_amount == D("500")


# ---- refused input ------------------------------------------------------------------------------

def test_net_other_than_amount_minus_fee_is_refused():
    with pytest.raises(PostingError, match="net 9000 is not amount 10000 - fee 320"):
        build_posting(charge(), bt("txn_1", 10000, 320, net=9000, category="charge"), POLICY)


def test_fee_details_not_adding_up_to_the_fee_are_refused():
    txn = bt("txn_1", 10000, 320, category="charge",
             fee_details=[{"amount": 300, "currency": "usd", "type": "stripe_fee"}])
    with pytest.raises(PostingError, match="fee_details do not add up to fee 320"):
        build_posting(charge(), txn, POLICY)


@pytest.mark.parametrize("bad", [{"amount": 10.5}, {"amount": "1000"}, {"amount": True}, {"currency": None},
                                 {"created": "yesterday"}])
def test_malformed_balance_transactions_are_refused_with_the_reason(bad):
    txn = {**bt("txn_1", 1000, category="charge"), **bad}
    if "amount" in bad:
        txn.pop("net")
    with pytest.raises(PostingError):
        build_posting({"id": "ch_1"}, txn, POLICY)


def test_a_posting_that_does_not_balance_cannot_be_built():
    with pytest.raises(UnbalancedPosting, match=r"off by 0\.01 USD"):
        Posting(kind="charge", key="ch_1", books="platform", date="2026-01-01", currency="USD",
                lines=(Line("Stripe Clearing", D("10.01"), "clearing"), Line("Sales", D("-10.00"), "revenue")),
                gross=D("10.00"), fee=D(0), net=D("10.01"), settlement_currency="USD",
                settlement_amount=D("10.00"), presentment_currency="USD", presentment_amount=D("10.00"),
                exchange_rate=None, home_rate=None, balance_transaction="txn_1", source="ch_1", account=None)


def test_policy_from_ledgerflow_yaml_vars_then_accounts_and_refuses_unknowns():
    pol = load_accounting({"vars": {"clearing_account": "Stripe USD"},
                           "accounting": {"accounts": {"sales": "Revenue"},
                                          "connect": {"destination_charges": "principal",
                                                      "account_books": {"acct_x": "sage_x"}}}},
                          {"home_currency": "eur", "timezone": "Europe/Paris"})
    assert (pol.account("clearing"), pol.account("sales"), pol.account("bank")) == ("Stripe USD", "Revenue",
                                                                                    "Operating Bank")
    assert (pol.home_currency, pol.destination_charges, dict(pol.account_books)) == ("EUR", "principal",
                                                                                     {"acct_x": "sage_x"})
    with pytest.raises(PolicyError, match="unknown role"):
        load_accounting({"accounting": {"accounts": {"salez": "x"}}}, {})
    with pytest.raises(PolicyError, match="agent or principal"):
        load_accounting({"accounting": {"connect": {"destination_charges": "both"}}}, {})


def test_the_date_is_the_balance_transactions_day_in_the_projects_timezone():
    late = T + 23 * 3600          # 23:00 UTC on Jan 1 is Jan 2 in Tokyo
    p = build_posting(charge(), bt("txn_1", 100, category="charge", created=late),
                      AccountingPolicy(timezone="Asia/Tokyo"))
    assert p.date == "2026-01-02"


# ---- DocumentView: the movement as one set of books takes it --------------------------------------

def _eur_charge():
    return build_posting(charge("ch_eur", 1000, "eur"), bt("txn_eur", 1087, 62, category="charge", rate=1.087),
                         POLICY)


def test_document_in_single_currency_books_is_home_currency_at_rate_one():
    doc = DocumentView(_eur_charge(), multicurrency=False)
    assert (doc.currency, doc.amount, doc.home_amount, doc.exchange_rate, doc.foreign_per_home) == \
        ("USD", D("10.87"), D("10.87"), D(1), D(1))
    assert doc.is_home and doc.customer == "Stripe Customers"


def test_document_in_multicurrency_books_is_in_presentment_currency_with_a_customer_per_currency():
    doc = DocumentView(_eur_charge(), multicurrency=True)
    assert (doc.currency, doc.amount, doc.home_amount) == ("EUR", D("10.00"), D("10.87"))
    assert (doc.amount * doc.exchange_rate).quantize(D("0.01")) == D("10.87")
    assert (doc.amount / doc.foreign_per_home).quantize(D("0.01")) == D("10.87")
    assert doc.customer == "Stripe Customers EUR" and doc.customer_name("Web Shop") == "Web Shop EUR"
    usd = DocumentView(build_posting(charge(), bt("txn_1", 10000, category="charge"), POLICY), multicurrency=True)
    assert (usd.currency, usd.exchange_rate, usd.customer) == ("USD", D(1), "Stripe Customers")


def _view(home, foreign, f_minor, rate):
    fq = from_minor(f_minor, foreign)
    home_amount = (fq * rate).quantize(quantum(home), ROUND_HALF_EVEN)
    p = Posting(kind="charge", key="ch_x", books="platform", date="2026-01-01", currency=home,
                lines=(Line("Stripe Clearing", home_amount, "clearing"), Line("Sales", -home_amount, "revenue")),
                gross=home_amount, fee=D(0), net=home_amount, settlement_currency=home,
                settlement_amount=home_amount, presentment_currency=foreign, presentment_amount=fq,
                exchange_rate=rate, home_rate=None, balance_transaction="txn_x", source="ch_x", account=None)
    return DocumentView(p, multicurrency=True), fq, home_amount


PAIRS = [("USD", "EUR", D("0.5"), D("2")), ("USD", "JPY", D("0.004"), D("0.02")), ("USD", "BHD", D("2"), D("3")),
         ("USD", "ISK", D("0.005"), D("0.01")), ("EUR", "USD", D("0.6"), D("1.2")), ("GBP", "EUR", D("0.7"), D("1")),
         ("JPY", "USD", D("50"), D("300")), ("EUR", "GBP", D("1"), D("1.5"))]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(pair=st.sampled_from(PAIRS), minor=st.integers(1, 99_999_999), frac=st.floats(0, 1))
def test_exchange_rate_and_foreign_per_home_round_trip_exactly_to_the_home_amount(pair, minor, frac):
    home, foreign, lo, hi = pair
    if foreign in ("BHD",):
        minor -= minor % 10
    if foreign == "ISK":
        minor -= minor % 100
    rate = (lo + (hi - lo) * D(str(frac))).quantize(D("0.000001"))
    doc, fq, home_amount = _view(home, foreign, minor or 100, rate)
    if home_amount == 0:
        return
    q = quantum(home)
    for rounding in (ROUND_HALF_EVEN, ROUND_HALF_UP):     # the books may round either way
        assert (doc.amount * doc.exchange_rate).quantize(q, rounding) == home_amount
        assert (doc.amount / doc.foreign_per_home).quantize(q, rounding) == home_amount
    assert doc.exchange_rate.as_tuple().exponent >= -12 and doc.foreign_per_home.as_tuple().exponent >= -12


def test_a_whole_exchange_rate_renders_without_an_exponent():
    rate = effective_rate(D("1500"), D("10.00"), "JPY")         # 10.00 USD = 1500 JPY, no rate from Stripe
    assert rate == 150
    assert "E" not in str(rate)


def test_exchange_rate_round_trips_whatever_the_targets_rounding():
    # Stripe's 0.013304 makes 387370.905: half-even 387370.90, half-up .91; the document's rate must not
    doc, fq, home_amount = _view("USD", "JPY", 29116875, D("0.013304"))
    for rounding in (ROUND_HALF_UP, ROUND_HALF_EVEN):
        assert (doc.amount * doc.exchange_rate).quantize(D("0.01"), rounding) == home_amount
    assert effective_rate(home_amount, fq, "USD") != D("0.013304")


def test_foreign_per_home_round_trips_for_large_amounts_in_a_weak_home_currency():
    doc, fq, home_amount = _view("KRW", "USD", 76496171, D("1432.67"))      # 764,961.71 USD
    assert (doc.amount / doc.foreign_per_home).quantize(D("1"), ROUND_HALF_EVEN) == home_amount


def test_rate_helpers_on_edges():
    assert effective_rate(D(0), D(0), "USD") == 1 and inverse_rate(D(0), D(5), "USD") == 1
    assert effective_rate(D("10.87"), D("10.00"), "USD") == D("1.087000")


# ---- which movement an event books ----------------------------------------------------------------

def ev(etype, obj, account=None, eid="evt_1"):
    e = {"id": eid, "object": "event", "type": etype, "created": T, "data": {"object": obj}}
    if account:
        e["account"] = account
    return e


@pytest.mark.parametrize("etype, obj, kind, bt_ref", [
    ("charge.succeeded", {"id": "ch_1", "object": "charge", "balance_transaction": "txn_c"}, "charge", "txn_c"),
    ("charge.captured", {"id": "ch_1", "object": "charge", "balance_transaction": "txn_c"}, "charge", "txn_c"),
    ("refund.created", {"id": "re_1", "object": "refund", "balance_transaction": "txn_r"}, "refund", "txn_r"),
    ("refund.updated", {"id": "re_1", "object": "refund", "balance_transaction": "txn_r"}, "refund", "txn_r"),
    ("charge.refund.updated", {"id": "re_1", "object": "refund", "balance_transaction": "txn_r"}, "refund", "txn_r"),
    ("application_fee.created", {"id": "fee_1", "object": "application_fee", "balance_transaction": "txn_f"},
     "platform_earning", "txn_f"),
    ("transfer.created", {"id": "tr_1", "object": "transfer", "balance_transaction": "txn_t"}, "transfer", "txn_t"),
    ("payout.paid", {"id": "po_1", "object": "payout", "balance_transaction": "txn_p",
                     "failure_balance_transaction": None}, "payout", "txn_p"),
    ("payout.failed", {"id": "po_1", "object": "payout", "balance_transaction": "txn_p",
                       "failure_balance_transaction": "txn_pf"}, "payout_reversal", "txn_pf"),
])
def test_movement_of_each_event_type(etype, obj, kind, bt_ref):
    mv = movement_of(ev(etype, obj, account="acct_x"))
    assert (mv.kind, mv.bt_id, mv.obj["id"], mv.account, mv.charge_ref) == (kind, bt_ref, obj["id"], "acct_x", None)


@pytest.mark.parametrize("etype, why", [("charge.refunded", "cumulative amount_refunded"),
                                        ("charge.dispute.created", "funds_withdrawn"),
                                        ("charge.dispute.closed", "moves no money"),
                                        ("customer.created", "not one of the money movements")])
def test_events_that_move_no_money_are_refused_with_the_reason(etype, why):
    with pytest.raises(PostingError, match=why):
        movement_of(ev(etype, {"id": "ch_1", "object": "charge", "amount_refunded": 500,
                               "balance_transaction": "txn_c"}))


def test_a_movement_without_its_balance_transaction_yet_is_refused():
    with pytest.raises(PostingError, match="no balance_transaction yet"):
        movement_of(ev("refund.created", {"id": "re_1", "object": "refund", "balance_transaction": None}))


def test_payment_intent_succeeded_books_its_latest_charge():
    pi = {"id": "pi_1", "object": "payment_intent", "latest_charge": "ch_1"}
    mv = movement_of(ev("payment_intent.succeeded", pi))
    assert (mv.kind, mv.charge_ref, mv.bt) == ("charge", "ch_1", None)
    expanded = {**pi, "latest_charge": {"id": "ch_1", "object": "charge", "balance_transaction": "txn_c"}}
    mv = movement_of(ev("payment_intent.succeeded", expanded))
    assert (mv.obj["id"], mv.bt_id, mv.charge_ref) == ("ch_1", "txn_c", None)
    with pytest.raises(PostingError, match="no latest_charge"):
        movement_of(ev("payment_intent.succeeded", {**pi, "latest_charge": None}))


def _dispute(bts):
    return {"id": "du_1", "object": "dispute", "amount": 5000, "currency": "usd", "balance_transactions": bts}


def test_dispute_events_pick_the_withdrawal_or_the_reinstatement():
    w = bt("txn_dw", -5000, 1500, category="dispute")
    r = bt("txn_dr", 5000, -1500, category="dispute_reversal")
    assert movement_of(ev("charge.dispute.funds_withdrawn", _dispute([w, r]))).bt_id == "txn_dw"
    assert movement_of(ev("charge.dispute.funds_reinstated", _dispute([w, r]))).bt_id == "txn_dr"
    assert movement_of(ev("charge.dispute.funds_reinstated", _dispute([r, w]))).bt_id == "txn_dr"
    # older objects without reporting_category: the first is the withdrawal, the second the reinstatement
    w0, r0 = {**w, "reporting_category": None}, {**r, "reporting_category": None}
    assert movement_of(ev("charge.dispute.funds_withdrawn", _dispute([w0, r0]))).bt_id == "txn_dw"
    assert movement_of(ev("charge.dispute.funds_reinstated", _dispute([w0, r0]))).bt_id == "txn_dr"
    with pytest.raises(PostingError, match="lists no dispute_reversal"):
        movement_of(ev("charge.dispute.funds_reinstated", _dispute([w])))


def test_application_fee_refunded_books_the_newest_refund():
    fee = {"id": "fee_1", "object": "application_fee", "currency": "eur", "refunds": {"object": "list", "data": [
        {"id": "fr_old", "amount": 10, "created": T, "balance_transaction": "txn_fr_old"},
        {"id": "fr_new", "amount": 20, "created": T + 60, "balance_transaction": "txn_fr_new"},
        {"id": "fr_mid", "amount": 30, "created": T + 30, "balance_transaction": "txn_fr_mid"}]}}
    mv = movement_of(ev("application_fee.refunded", fee))
    assert (mv.kind, mv.obj["id"], mv.bt_id, mv.obj["currency"]) == ("platform_earning_refund", "fr_new",
                                                                     "txn_fr_new", "eur")
    with pytest.raises(PostingError, match="lists no refund"):
        movement_of(ev("application_fee.refunded", {**fee, "refunds": {"data": []}}))


# ---- PostingSource without the Stripe API (flow tests pin the balance transaction) ---------------

def test_charge_succeeded_and_payment_intent_succeeded_of_one_payment_have_one_key():
    src = PostingSource(POLICY)
    txn = bt("txn_c", 10000, 320, category="charge")
    ch = charge("ch_1", 10000, balance_transaction="txn_c")
    a = src.for_event(ev("charge.succeeded", ch), pinned_bt=txn)
    b = src.for_event(ev("payment_intent.succeeded", {"id": "pi_1", "object": "payment_intent",
                                                      "latest_charge": {**ch, "balance_transaction": txn}},
                         eid="evt_2"))
    assert a.key == b.key == "ch_1" and lines(a) == lines(b)


def test_without_the_stripe_api_a_balance_transaction_id_says_how_to_fix_it():
    src = PostingSource(POLICY, offline_hint="set stripe.api_key in ledgerflow.yaml")
    with pytest.raises(FetchError, match="set stripe.api_key in ledgerflow.yaml") as e:
        src.for_event(ev("charge.succeeded", charge(balance_transaction="txn_c")))
    assert e.value.transient is False


def test_destination_charge_share_is_converted_from_the_charges_own_units():
    # ¥3,000 of which ¥2,500 goes to the seller, settled $20.34 at 0.00678: the platform keeps ¥500 = $3.39
    ch = charge("ch_dj", 3000, "jpy", transfer_data={"destination": "acct_x", "amount": 2500})
    p = build_posting(ch, bt("txn_dj", 2034, category="charge", rate="0.00678"), POLICY)
    assert lines(p) == {"Stripe Clearing": D("20.34"), "Connected Accounts Payable": D("-16.95"),
                        "Application Fee Revenue": D("-3.39")}
    # BHD (three decimals): BHD 10.000 of which BHD 9.000 transferred, settled $26.60 at 2.6596
    ch = charge("ch_db", 10000, "bhd", transfer_data={"destination": "acct_x", "amount": 9000})
    p = build_posting(ch, bt("txn_db", 2660, category="charge", rate="2.6596"), POLICY)
    assert lines(p)["Application Fee Revenue"] == D("-2.66") and balanced(p)


def test_a_partially_captured_charge_is_documented_at_what_was_captured():
    ch = charge("ch_pc", 10000, "eur", amount_captured=6000)
    p = build_posting(ch, bt("txn_pc", 6500, category="charge", rate="1.0834"), POLICY)
    assert p.presentment_amount == D("60.00") and "EUR 60.00 at 1.0834" in p.memo
    assert DocumentView(p, True).amount == D("60.00")


def test_a_refund_that_fails_after_money_left_is_its_own_movement():
    refund = {"id": "re_f", "object": "refund", "amount": 500, "currency": "usd", "status": "failed",
              "balance_transaction": "txn_re", "failure_balance_transaction": "txn_rf", "created": T}
    mv = movement_of({"id": "evt_f", "type": "refund.updated", "data": {"object": refund}})
    assert (mv.kind, mv.bt) == ("refund_failure", "txn_rf")
    p = build_posting(refund, bt("txn_rf", 500, category="refund_failure"), POLICY, kind=mv.kind)
    assert (p.kind, p.key) == ("refund_failure", "txn_rf")
    assert lines(p) == {"Stripe Clearing": D("5.00"), "Sales Refunds": D("-5.00")}
    # the same refund while it is still succeeded/pending is the refund itself
    ok = movement_of({"id": "evt_o", "type": "refund.updated", "data": {"object": {**refund, "status": "succeeded"}}})
    assert (ok.kind, ok.bt) == ("refund", "txn_re")
