"""The seeded Stripe scenario generator (tests/books/scenario.py) checks itself against Stripe's rules."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.books.scenario import EXPONENT, Scenario, generate
from tests.standins.stripe_api import DEFAULT_KEY, StripeStandin

SEEDS = [0, 1, 7, 42, 2026]
FIXTURES = Path("/work/shared/reference/stripe/fixtures3.json")
# keys Stripe documents on these objects that its example fixture lacks
DOCUMENTED_EXTRA = {"charge": {"transfer"}, "refund": set(), "dispute": set(), "balance_transaction": set(),
                    "payout": set(), "application_fee": set(), "transfer": set(), "fee_refund": set(),
                    "payment_intent": set(), "event": {"account"}}


@pytest.fixture(scope="module")
def scenarios() -> dict[int, Scenario]:
    return {s: generate(s) for s in SEEDS}


def _by_type(sc: Scenario) -> dict[str, list[tuple[dict, str | None]]]:
    out = defaultdict(list)
    for obj, acct, _ in sc.objects:
        out[obj["object"]].append((obj, acct))
    return out


def check_money(sc: Scenario) -> None:
    """The invariants every scenario keeps (also run by the property test)."""
    for tid, (bt, _) in sc.balance_transactions.items():
        assert bt["amount"] - bt["fee"] == bt["net"], tid
        assert bt["fee"] == sum(fd["amount"] for fd in bt["fee_details"]), tid
        assert all(fd["currency"] == bt["currency"] for fd in bt["fee_details"]), tid
        assert bt["currency"].upper() == sc.settlement[sc.balance_transactions[tid][1]]
    listed = Counter()
    for po, acct in sc.payouts:
        txns = sc.payout_transactions(po["id"])
        assert txns and po["amount"] == sum(t["net"] for t in txns), po["id"]
        assert all(sc.balance_transactions[t["id"]][1] == acct for t in txns)
        own = sc.balance_transactions[po["balance_transaction"]][0]
        assert (own["type"], own["net"], own["source"]) == ("payout", -po["amount"], po["id"])
        listed.update(t["id"] for t in txns)
    assert max(listed.values()) == 1, "a transaction paid out twice"
    for acct in [None, *sc.accounts]:
        truth = sc.truth(acct)
        assert truth["balance"] == truth["unpaid"]
        assert truth["payouts"] == {po["id"]: Decimal(po["amount"]).scaleb(-EXPONENT[po["currency"]])
                                    for po, a in sc.payouts if a == acct}


@pytest.mark.parametrize("seed", SEEDS)
def test_money_invariants(scenarios, seed):
    check_money(scenarios[seed])


@pytest.mark.parametrize("seed", SEEDS)
def test_currencies_and_conversion(scenarios, seed):
    sc = scenarios[seed]
    charges = [(o, a) for o, a in _by_type(sc)["charge"] if o["id"].startswith("ch_")]
    assert {c["currency"] for c, _ in charges} >= {"usd", "eur", "gbp", "jpy", "bhd", "isk"}
    for c, acct in charges:
        if c["currency"] == "isk":
            assert c["amount"] % 100 == 0
        if c["currency"] == "bhd":
            assert c["amount"] % 10 == 0
        bt = sc.balance_transactions[c["balance_transaction"]][0]
        settle = sc.settlement[acct].lower()
        assert bt["currency"] == settle
        if c["currency"] == settle:
            assert bt["exchange_rate"] is None and bt["amount"] == c["amount"]
        else:
            major = Decimal(c["amount"]).scaleb(-EXPONENT[c["currency"]]) * Decimal(str(bt["exchange_rate"]))
            assert bt["amount"] == int(major.scaleb(EXPONENT[settle]).quantize(Decimal(1), ROUND_HALF_EVEN))
        stripe_fee = [fd for fd in bt["fee_details"] if fd["type"] == "stripe_fee"]
        assert len(stripe_fee) == 1 and stripe_fee[0]["amount"] > 0
    assert sc.settlement == {None: "USD", sc.accounts[0]: "USD", sc.accounts[1]: "EUR"}


@pytest.mark.parametrize("seed", SEEDS)
def test_connect_refund_dispute_payout_shapes_of_the_month(scenarios, seed):
    sc = scenarios[seed]
    objs = _by_type(sc)
    bts = sc.balance_transactions
    cats = {acct: Counter(bt["reporting_category"] for bt, a in bts.values() if a == acct)
            for acct in [None, *sc.accounts]}
    assert set(cats[None]) >= {"charge", "refund", "transfer", "platform_earning", "platform_earning_refund",
                               "other_adjustment", "payout", "payout_reversal"}
    all_cats = sum(cats.values(), Counter())
    assert all_cats["dispute"] >= 2 and all_cats["dispute_reversal"] >= 1 and cats[sc.accounts[1]]["fee"] >= 0
    # destination charges: transfer on the platform, the payment on the connected account
    for tr, acct in objs["transfer"]:
        assert acct is None and bts[tr["balance_transaction"]][0]["amount"] == -tr["amount"]
        py, py_acct = sc.object(tr["destination_payment"])
        assert py_acct == tr["destination"] and py["source_transfer"] == tr["id"]
        pbt = bts[py["balance_transaction"]][0]
        assert (pbt["type"], pbt["reporting_category"], pbt["amount"]) == ("payment", "charge", tr["amount"])
        ch, _ = sc.object(tr["source_transaction"])
        assert ch["transfer_data"]["destination"] == tr["destination"] and ch["transfer"] == tr["id"]
    # direct charges: application fee in the connected account's fee_details, platform_earning on the platform
    assert objs["application_fee"]
    for fee, acct in objs["application_fee"]:
        ch, ch_acct = sc.object(fee["charge"])
        assert acct is None and ch_acct == fee["account"] and ch["application_fee"] == fee["id"]
        cbt = bts[ch["balance_transaction"]][0]
        assert [fd["amount"] for fd in cbt["fee_details"] if fd["type"] == "application_fee"] == [fee["amount"]]
        fbt = bts[fee["balance_transaction"]][0]
        assert (fbt["reporting_category"], fbt["currency"], fbt["source"]) == ("platform_earning", "usd", fee["id"])
        assert fee["amount_refunded"] == sum(fr["amount"] for fr in fee["refunds"]["data"])
    assert objs["fee_refund"]
    for fr, _ in objs["fee_refund"]:
        assert bts[fr["balance_transaction"]][0]["reporting_category"] == "platform_earning_refund"
        assert bts[fr["balance_transaction"]][0]["amount"] < 0
    # refunds: own BT each; partial, two partials, full
    refunds_of = defaultdict(list)
    for re_, _acct in objs["refund"]:
        bt = bts[re_["balance_transaction"]][0]
        assert (bt["reporting_category"], bt["source"]) == ("refund", re_["id"]) and bt["amount"] < 0
        assert bt["fee"] == 0
        refunds_of[re_["charge"]].append(re_)
    kinds = Counter()
    for cid, rs in refunds_of.items():
        ch, _ = sc.object(cid)
        assert ch["amount_refunded"] == sum(r["amount"] for r in rs) <= ch["amount"]
        kinds["full" if ch["refunded"] else "partial"] += 1
        kinds["repeated"] += len(rs) >= 2
    assert kinds["full"] and kinds["partial"] and kinds["repeated"]
    # disputes: lost (one BT), won (two BTs; the fee returned)
    outcomes = Counter()
    for dp, _acct in objs["dispute"]:
        ch, _ = sc.object(dp["charge"])
        assert dp["amount"] == ch["amount"] and ch["disputed"]
        first = dp["balance_transactions"][0]
        assert (first["reporting_category"], first["fee"]) == ("dispute", first["fee_details"][0]["amount"])
        assert first["fee"] in (1500, 2000) and first["fee_details"][0]["type"] == "stripe_fee"
        if dp["status"] == "won":
            back = dp["balance_transactions"][1]
            assert back["reporting_category"] == "dispute_reversal" and back["fee"] == -first["fee"]
        else:
            assert len(dp["balance_transactions"]) == 1
        outcomes[dp["status"]] += 1
    assert outcomes["won"] and outcomes["lost"]
    # payouts: one negative, one failed whose funds come back in a payout_failure BT paid out later
    assert any(po["amount"] < 0 for po, a in sc.payouts)
    failed = [po for po, _ in sc.payouts if po["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["failure_code"]
    back = bts[failed[0]["failure_balance_transaction"]][0]
    assert (back["type"], back["reporting_category"], back["amount"]) == \
        ("payout_failure", "payout_reversal", failed[0]["amount"])
    assert any(back["id"] in sc.payout_txns[po["id"]] for po, _ in sc.payouts)


@pytest.mark.skipif(not FIXTURES.exists(), reason="Stripe's fixtures not available")
def test_shapes_match_stripes_fixtures(scenarios):
    fixtures = json.loads(FIXTURES.read_text())["resources"]

    def compatible(ours, theirs) -> bool:
        return ours is None or theirs is None or type(ours) is type(theirs) or \
            (isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and not isinstance(ours, bool))

    sc = scenarios[SEEDS[0]]
    objs = _by_type(sc)
    objs["event"] = [(e, None) for e in sc.events]
    for kind, extra in DOCUMENTED_EXTRA.items():
        fx = fixtures[kind]
        assert objs[kind], kind
        for obj, _ in objs[kind]:
            keys = set(obj)
            assert set(fx) <= keys, (kind, set(fx) - keys)
            assert keys - set(fx) <= extra, (kind, keys - set(fx))
            for k in fx:
                assert compatible(obj[k], fx[k]), (kind, k, obj[k], fx[k])
    for bt, _ in sc.balance_transactions.values():
        for fd in bt["fee_details"]:
            assert set(fd) == {"amount", "application", "currency", "description", "type"}


def _find_expanded_bt(value, path="") -> list[str]:
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("balance_transaction", "failure_balance_transaction") and v is not None and \
                    not isinstance(v, str):
                out.append(path + "." + k)
            if k != "balance_transactions":          # a dispute's list is full objects, as Stripe sends it
                out += _find_expanded_bt(v, path + "." + k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _find_expanded_bt(v, f"{path}[{i}]")
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_events(scenarios, seed):
    sc = scenarios[seed]
    chrono = sc.chronological(include_missing=True)
    types = Counter(e["type"] for e in chrono)
    for t in ("charge.succeeded", "payment_intent.succeeded", "charge.refunded", "refund.created",
              "refund.updated", "charge.dispute.created", "charge.dispute.funds_withdrawn",
              "charge.dispute.funds_reinstated", "charge.dispute.closed", "application_fee.created",
              "application_fee.refunded", "transfer.created", "payout.created", "payout.paid", "payout.failed"):
        assert types[t], t
    # one charge.succeeded and one payment_intent.succeeded per payment
    assert types["charge.succeeded"] == types["payment_intent.succeeded"]
    where = {obj["id"]: acct for obj, acct, _ in sc.objects}
    refunds = [o for o, _, _ in sc.objects if o["object"] == "refund"]
    for e in chrono:
        assert set(e) >= {"id", "object", "api_version", "created", "data", "livemode", "pending_webhooks",
                          "request", "type"} and e["api_version"]
        obj = e["data"]["object"]
        assert not _find_expanded_bt(obj), (e["type"], _find_expanded_bt(obj))
        if "balance_transaction" in obj and e["type"] != "payout.created":
            assert isinstance(obj["balance_transaction"], str)
        assert e.get("account") == where[obj["id"]], e["type"]
        if e["type"] == "charge.refunded":         # cumulative, as of the event
            so_far = sum(r["amount"] for r in refunds if r["charge"] == obj["id"] and r["created"] <= e["created"])
            assert obj["amount_refunded"] == so_far
        if e["type"] == "payout.created":
            assert obj["status"] == "pending"
    assert [e["created"] for e in chrono] == sorted(e["created"] for e in chrono)
    # delivery: duplicates, out of order, nothing missing unless asked
    ids = [e["id"] for e in sc.events]
    assert len(ids) > len(set(ids)) and {i for i, n in Counter(ids).items() if n > 1} == sc.duplicated
    assert sc.reordered and [e["created"] for e in sc.events] != sorted(e["created"] for e in sc.events)
    assert set(ids) == {e["id"] for e in chrono} and not sc.missing


def test_missing_drops_every_event_of_a_movement():
    sc = generate(11, missing=3)
    assert len(sc.missing) == 3 and all(m.split("_")[0] in ("ch", "re", "fee") for m in sc.missing)
    delivered = {e["id"] for e in sc.events}
    assert sc.missing_events and not (delivered & sc.missing_events)
    for e in sc.chronological(include_missing=True):
        obj = e["data"]["object"]
        about = {obj["id"]} | ({obj["latest_charge"]} if obj.get("object") == "payment_intent" else set())
        if about & sc.missing and e["type"] in ("charge.succeeded", "payment_intent.succeeded", "refund.created",
                                                "refund.updated", "application_fee.created"):
            assert e["id"] not in delivered
    # the movements themselves are still in Stripe, with their balance transactions
    for m in sc.missing:
        obj, _ = sc.object(m)
        assert obj["balance_transaction"] in sc.balance_transactions
    # the same scenario without missing events has the same objects
    clean = generate(11)
    assert [o["id"] for o, _, _ in clean.objects] == [o["id"] for o, _, _ in sc.objects]


def test_deterministic_and_seed_dependent():
    a, b = generate(5, size="medium", missing=2), generate(5, size="medium", missing=2)
    dump = lambda sc: json.dumps([sc.objects, sc.events, sorted(sc.missing)], sort_keys=True, default=str)  # noqa: E731
    assert dump(a) == dump(b)
    assert dump(generate(6, size="medium", missing=2)) != dump(a)


def test_medium_is_fast_and_sized():
    t = time.perf_counter()
    sc = generate(3, size="medium")
    assert time.perf_counter() - t < 1.0
    assert sum(1 for o, _, _ in sc.objects if o["object"] == "charge" and o["id"].startswith("ch_")) >= 300
    check_money(sc)


def test_loads_into_the_standin_and_payouts_list_their_transactions():
    sc = generate(9)
    s = sc.standin(StripeStandin())
    eu = sc.accounts[1]

    async def go():
        auth = {"Authorization": f"Bearer {DEFAULT_KEY}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=s.app), base_url="http://stripe.test",
                                     headers=auth) as c:
            out = {}
            for po, acct in sc.payouts:
                hdr = {"Stripe-Account": acct} if acct else {}
                page = (await c.get("/v1/balance_transactions", params={"payout": po["id"], "limit": 100},
                                    headers=hdr)).json()
                assert not page["has_more"]
                out[po["id"]] = page["data"]
            bt_id = next(t for t, (bt, a) in sc.balance_transactions.items() if a == eu)
            scoped = (await c.get(f"/v1/balance_transactions/{bt_id}", headers={"Stripe-Account": eu})).json()
            events = (await c.get("/v1/events", params={"limit": 100})).json()
            conn_events = (await c.get("/v1/events", params={"limit": 100}, headers={"Stripe-Account": eu})).json()
            return out, scoped, bt_id, events, conn_events

    listed, scoped, bt_id, events, conn_events = asyncio.run(go())
    for po, _ in sc.payouts:
        txns = listed[po["id"]]
        assert sum(t["net"] for t in txns if t["type"] != "payout" or t["source"] != po["id"]) == po["amount"]
        assert po["balance_transaction"] in {t["id"] for t in txns}
    assert scoped["id"] == bt_id and scoped["currency"] == "eur"
    assert events["data"] and all("account" not in e for e in events["data"])
    assert conn_events["data"] and all(e["account"] == eu for e in conn_events["data"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2 ** 31), missing=st.integers(min_value=0, max_value=3))
def test_property_any_seed_keeps_the_invariants(seed, missing):
    sc = generate(seed, missing=missing)
    check_money(sc)
    assert len(sc.missing) == missing
    assert sc.duplicated and sc.reordered
    assert any(po["amount"] < 0 for po, _ in sc.payouts)
    assert sum(po["status"] == "failed" for po, _ in sc.payouts) == 1
