"""The QuickBooks Online connector against the stand-in: creates, batch, idempotency,
faults, auth, throttling, look-ups, multicurrency."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.base import ErrorKind
from connectors.oauth import TokenStore
from connectors.quickbooks_online.client import request_id
from runner.store.tokens import TokenRows
from tests.qbo_support import CONNECTION, item, qbo, receipt  # noqa: F401 - qbo is a fixture

pytestmark = pytest.mark.usefixtures("qbo")


def creates(env, resource: str) -> list[dict]:
    return [e for e in env.standin.log if e["method"] == "POST" and e["path"].endswith("/" + resource)]


@pytest.mark.one_store
def test_requestid_is_the_key_or_a_deterministic_hash():
    assert request_id("qbo-charge:ch_1") == "qbo-charge:ch_1"
    long = "qbo-charges:receipt:" + "x" * 60
    assert len(request_id(long)) == 50 and request_id(long) == request_id(long) != request_id(long + "y")
    assert len(request_id("a key with spaces")) <= 50 and " " not in request_id("a key with spaces")


def test_single_create_resolves_names_sends_requestid_and_marks_the_document(qbo):
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert out.ok, out.error
    kind, doc_id = out.target_ref.split(":")
    doc = qbo.company.entities["SalesReceipt"][doc_id]
    accounts = {a["Name"]: a["Id"] for a in qbo.company.all("Account")}
    assert doc["DepositToAccountRef"] == {"value": accounts["Stripe Clearing"]}
    assert doc["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"] == qbo.company.all("Item")[0]["Id"]
    assert "[ledgerflow qbo-charge:ch_000001]" in doc["PrivateNote"] and doc["TotalAmt"] == Decimal("12.50")
    [post] = creates(qbo, "salesreceipt")
    assert post["params"] == {"minorversion": "75", "requestid": "qbo-charge:ch_000001"}
    assert all(e["params"].get("minorversion") == "75" for e in qbo.standin.log)
    # the customer was created once (find-or-create) ...
    assert [c["DisplayName"] for c in qbo.company.all("Customer")] == ["Stripe Customers"]
    # ... and found, not created again, by the next delivery (cached)
    assert qbo.connector().deliver([item(2, receipt("ch-0002"))])[0].ok
    assert len(qbo.company.all("Customer")) == 1 and len(creates(qbo, "customer")) == 1


def test_customer_found_by_email_before_creating(qbo):
    qbo.company.add("Customer", {"DisplayName": "Someone Else", "PrimaryEmailAddr": {"Address": "a@example.com"}})
    payload = receipt("ch-0003", CustomerRef={"name": "New Name", "email": "a@example.com"})
    assert qbo.connector().deliver([item(3, payload)])[0].ok
    assert len(qbo.company.all("Customer")) == 1
    [out] = qbo.connector().deliver([item(4, {"DisplayName": "Brand New"}, action="customer", key="cust:4")])
    assert out.ok and out.target_ref.startswith("Customer:") and len(qbo.company.all("Customer")) == 2


def test_batches_of_30_each_result_mapped_back_by_bid(qbo):
    items = [item(i, receipt(f"ch-{i:04d}", amount=f"{i}.00")) for i in range(1, 66)]
    bad = items[40]
    bad.payload["Line"][0].pop("Amount")                       # Intuit: required param missing
    outs = qbo.connector().deliver(items)
    batches = creates(qbo, "batch")
    assert len(batches) == 3 and all("requestid" in b["params"] for b in batches)
    assert [n for _, n in qbo.standin.batch_log] == [30, 30, 5] or sorted(n for _, n in qbo.standin.batch_log) == [5, 30, 30]
    by_id = {o.delivery_id: o for o in outs}
    failed = by_id[bad.delivery_id]
    assert not failed.ok and failed.error.kind == ErrorKind.PERMANENT
    assert "Line.Amount" in str(failed.error) and failed.error.field == "Line.Amount" and "2020" in str(failed.error)
    for it in items:
        if it is bad:
            continue
        doc = qbo.company.entities["SalesReceipt"][by_id[it.delivery_id].target_ref.split(":")[1]]
        assert doc["DocNumber"] == it.payload["DocNumber"]          # the right document for the right delivery
    assert len(qbo.company.all("SalesReceipt")) == 64


def test_repeated_requestid_returns_the_original_and_creates_nothing(qbo):
    first = qbo.connector().deliver([item(1, receipt("ch-0001"))])[0]
    second = qbo.connector().deliver([item(1, receipt("ch-0001"))])[0]     # a replay: same key, attempts 0
    assert first.ok and second.ok and first.target_ref == second.target_ref
    assert len(qbo.company.all("SalesReceipt")) == 1


def test_lost_response_then_retry_finds_the_document_by_docnumber(qbo):
    qbo.standin.lose.append("salesreceipt")
    [lost] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert not lost.ok and lost.error.kind == ErrorKind.RETRYABLE
    assert len(qbo.company.all("SalesReceipt")) == 1                         # it was created all the same
    before = len(creates(qbo, "salesreceipt"))
    [retry] = qbo.connector().deliver([item(1, receipt("ch-0001"), attempts=1)])
    assert retry.ok and retry.detail == {"existing": True}
    assert len(creates(qbo, "salesreceipt")) == before                       # queried, not re-sent
    queries = [e for e in qbo.standin.log if e["path"].endswith("/query")]
    assert any("DocNumber = 'ch-0001'" in q["params"]["query"] for q in queries)


def test_lost_batch_response_retried_in_another_composition(qbo):
    qbo.standin.lose.append("batch")
    outs = qbo.connector().deliver([item(1, receipt("ch-0001")), item(2, receipt("ch-0002"))])
    assert not any(o.ok for o in outs) and len(qbo.company.all("SalesReceipt")) == 2
    # a crashed worker never counted the attempt: attempts 0, alone (own requestid) -> 6140 -> ours -> done
    [again] = qbo.connector().deliver([item(2, receipt("ch-0002"))])
    assert again.ok and again.detail == {"existing": True} and len(qbo.company.all("SalesReceipt")) == 2


def test_transfer_without_docnumber_found_by_date_and_marker(qbo):
    payload = {"TxnDate": "2024-05-02", "PrivateNote": "Stripe payout po_1", "FromAccountRef": {"name": "Stripe Clearing"},
               "ToAccountRef": {"name": "Operating Bank"}, "Amount": Decimal("11.00")}
    qbo.standin.lose.append("transfer")
    assert not qbo.connector().deliver([item(1, payload, "transfer", key="qbo-payout:po_1")])[0].ok
    [retry] = qbo.connector().deliver([item(1, payload, "transfer", attempts=1, key="qbo-payout:po_1")])
    assert retry.ok and retry.detail == {"existing": True} and len(qbo.company.all("Transfer")) == 1


def test_duplicate_docnumber_not_ours_is_permanent(qbo):
    qbo.company.add("SalesReceipt", {"DocNumber": "ch-0001", "PrivateNote": "typed in by hand"})
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert not out.ok and out.error.kind == ErrorKind.PERMANENT and out.error.field == "DocNumber"
    assert "already used" in str(out.error) and "did not create" in str(out.error)


def test_fault_inside_http_200(qbo):
    fault = {"Fault": {"Error": [{"Message": "A business validation error has occurred while processing your request",
                                  "Detail": "Business Validation Error: Select a customer.", "code": "6000",
                                  "element": "CustomerRef"}], "type": "ValidationFault"}, "time": "x"}
    qbo.standin.inject.append(("salesreceipt", 200, fault))
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert not out.ok and out.error.kind == ErrorKind.PERMANENT and out.error.field == "CustomerRef"
    assert "Select a customer" in str(out.error) and "6000" in str(out.error)
    system = {"Fault": {"Error": [{"Message": "An application error has occurred", "code": "10000"}],
                        "type": "SystemFault"}}
    qbo.standin.inject.append(("salesreceipt", 200, system))
    [out] = qbo.connector().deliver([item(2, receipt("ch-0002"))])
    assert not out.ok and out.error.kind == ErrorKind.RETRYABLE


def test_5xx_is_retryable(qbo):
    qbo.standin.inject.append(("salesreceipt", 503, {}))
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert not out.ok and out.error.kind == ErrorKind.RETRYABLE and "503" in str(out.error)


def test_expired_access_token_is_refreshed_once_and_rotation_saved(qbo):
    old, v1 = TokenStore(TokenRows(qbo.store)).read(CONNECTION)
    qbo.standin.authority.expire_access()                  # Intuit says 401 though our clock thinks it's fresh
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert out.ok and qbo.standin.authority.refresh_calls == 1
    new, v2 = TokenStore(TokenRows(qbo.store)).read(CONNECTION)
    assert v2 == v1 + 1 and new.refresh_token != old.refresh_token and new.extra["realm_id"] == old.extra["realm_id"]


def test_refresh_refused_is_auth_with_reconnect_hint(qbo):
    ts, _ = TokenStore(TokenRows(qbo.store)).read(CONNECTION)
    qbo.standin.authority.expire_access()
    qbo.standin.authority.refresh[ts.refresh_token] = False
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert not out.ok and out.error.kind == ErrorKind.AUTH        # dead-lettered at once, with the way out
    assert "invalid_grant" in str(out.error) and "ledgerflow connect quickbooks-online" in str(out.error)
    assert ts.refresh_token not in str(out.error)


def test_429_is_throttled_with_retry_after_and_blocks_the_company(qbo):
    qbo.standin.per_minute = 3                   # someone else used the company's quota
    connector = qbo.connector(limits={"max_wait": 1})
    outs = [connector.deliver([item(i, receipt(f"ch-{i:04d}"))])[0] for i in range(1, 5)]
    throttled = [o for o in outs if not o.ok]
    assert throttled and all(o.error.kind == ErrorKind.THROTTLED for o in throttled)
    assert 0 < throttled[0].error.retry_after <= 60
    from runner.store.limiter import Limit, RateLimiter
    ids, wait = RateLimiter(qbo.store).try_acquire([Limit("qbo:" + "9130350000000001", rate=500)])
    assert ids is None and wait > 0             # every worker now waits for the same company


def test_429_without_retry_after_waits_60s(qbo):
    qbo.standin.per_minute = 0
    qbo.standin.retry_after = False
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001"))])
    assert out.error.kind == ErrorKind.THROTTLED and out.error.retry_after == 60


def test_own_limits_stop_before_intuit_throttles(qbo):
    qbo.standin.batch_per_minute = 2
    connector = qbo.connector(limits={"batch_per_minute": 2, "max_wait": 0.5})
    outs = connector.deliver([item(i, receipt(f"ch-{i:04d}")) for i in range(1, 91)])   # 3 batches
    sent = [o for o in outs if o.ok]
    waiting = [o for o in outs if not o.ok]
    assert len(sent) == 60 and len(waiting) == 30
    assert all(o.error.kind == ErrorKind.THROTTLED and o.error.retry_after > 50 for o in waiting)
    assert qbo.standin.throttled == 0


def test_unknown_account_name_is_permanent_and_named(qbo):
    [out] = qbo.connector().deliver([item(1, receipt("ch-0001", DepositToAccountRef={"name": "Stripe Clearnig"}))])
    assert not out.ok and out.error.kind == ErrorKind.PERMANENT
    assert "no Account named 'Stripe Clearnig'" in str(out.error)


def test_stale_cached_id_is_evicted_and_retried(qbo):
    assert qbo.connector().deliver([item(1, receipt("ch-0001"))])[0].ok
    clearing = next(a for a in qbo.company.all("Account") if a["Name"] == "Stripe Clearing")
    del qbo.company.entities["Account"][clearing["Id"]]       # merged away in QuickBooks ...
    qbo.company.seed_account("Stripe Clearing")               # ... and re-created with a new Id
    [out] = qbo.connector().deliver([item(2, receipt("ch-0002"))])
    assert not out.ok and out.error.kind == ErrorKind.RETRYABLE and "2500" in str(out.error)
    assert qbo.connector().deliver([item(2, receipt("ch-0002"), attempts=1)])[0].ok


def test_foreign_currency_without_multicurrency_is_a_clear_delivery_error(qbo):
    payload = receipt("ch-0001", CurrencyRef={"value": "EUR"}, ExchangeRate=Decimal("1.0834"),
                      CustomerRef={"name": "Stripe Customers EUR", "currency": "EUR"})
    [out] = qbo.connector().deliver([item(1, payload)])
    assert not out.ok and out.error.kind == ErrorKind.PERMANENT and "multicurrency: false" in str(out.error)
    assert qbo.standin.log == []                               # nothing was sent
    qbo.company.multicurrency = True
    [out] = qbo.connector(multicurrency=True).deliver([item(1, payload)])
    assert out.ok, out.error
    doc = qbo.company.all("SalesReceipt")[0]
    assert doc["CurrencyRef"] == {"value": "EUR"} and doc["ExchangeRate"] == Decimal("1.0834")
    customer = qbo.company.find("Customer", "Stripe Customers EUR")
    assert customer["CurrencyRef"] == {"value": "EUR"} and doc["CustomerRef"]["value"] == customer["Id"]


@pytest.mark.one_store
def test_a_foreign_customer_currency_alone_is_refused_without_multicurrency(qbo):
    payload = receipt("ch-0001", CustomerRef={"name": "Stripe Customers EUR", "currency": "EUR"})
    [out] = qbo.connector().deliver([item(1, payload)])
    assert not out.ok and out.error.kind == ErrorKind.PERMANENT and "EUR" in str(out.error)
    assert qbo.standin.log == []


def test_customers_are_per_currency_found_by_name_and_currency(qbo):
    qbo.company.multicurrency = True
    conn = qbo.connector(multicurrency=True)
    usd = receipt("ch-0001", CustomerRef={"name": "Stripe Customers", "currency": "USD"})
    eur = receipt("ch-0002", CurrencyRef={"value": "EUR"}, ExchangeRate=Decimal("1.0834"),
                  CustomerRef={"name": "Stripe Customers EUR", "currency": "EUR"})
    assert all(o.ok for o in conn.deliver([item(1, usd), item(2, eur)]))
    more = receipt("ch-0003", CurrencyRef={"value": "EUR"}, ExchangeRate=Decimal("1.09"),
                   CustomerRef={"name": "Stripe Customers EUR", "currency": "EUR"})
    assert qbo.connector(multicurrency=True).deliver([item(3, more)])[0].ok     # found, not created again
    customers = {c["DisplayName"]: c["CurrencyRef"]["value"] for c in qbo.company.all("Customer")}
    assert customers == {"Stripe Customers": "USD", "Stripe Customers EUR": "EUR"}
    docs = {d["DocNumber"]: d for d in qbo.company.all("SalesReceipt")}
    assert docs["ch-0002"]["CustomerRef"] == docs["ch-0003"]["CustomerRef"] != docs["ch-0001"]["CustomerRef"]


def test_a_customer_of_that_name_in_another_currency_is_a_permanent_error(qbo):
    qbo.company.multicurrency = True
    qbo.company.seed_named("Customer", "Stripe Customers", currency="USD")
    payload = receipt("ch-0001", CurrencyRef={"value": "EUR"}, ExchangeRate=Decimal("1.0834"),
                      CustomerRef={"name": "Stripe Customers", "currency": "EUR"})
    [out] = qbo.connector(multicurrency=True).deliver([item(1, payload)])
    assert not out.ok and out.error.kind == ErrorKind.PERMANENT
    assert "is in USD, not EUR" in str(out.error) and "Stripe Customers EUR" in str(out.error)
    assert qbo.company.all("SalesReceipt") == []


def test_single_currency_company_gets_its_home_currency_customer(qbo):
    payload = receipt("ch-0001", CustomerRef={"name": "Stripe Customers", "currency": "USD"})
    assert qbo.connector().deliver([item(1, payload)])[0].ok
    sent = [e for e in qbo.standin.log if e["method"] == "POST" and e["path"].endswith("/customer")]
    assert len(sent) == 1 and qbo.company.find("Customer", "Stripe Customers") is not None


def test_lost_response_without_docnumber_is_found_by_date_and_marker(qbo):
    payload = receipt("ch-0009")
    payload.pop("DocNumber")
    payload["TxnDate"] = "2024-05-03"
    qbo.standin.lose.append("salesreceipt")
    assert not qbo.connector().deliver([item(9, payload)])[0].ok
    [retry] = qbo.connector().deliver([item(9, payload, attempts=1)])
    assert retry.ok and retry.detail == {"existing": True}
    assert len(qbo.company.all("SalesReceipt")) == 1          # not booked twice


def test_a_replayed_fix_is_sent_with_a_new_requestid(qbo):
    bad = receipt("ch-0010")
    bad["Line"][0].pop("Amount")
    [first] = qbo.connector().deliver([item(10, bad)])
    assert not first.ok and first.error.kind == ErrorKind.PERMANENT
    # the dead-letter replay keeps counting attempts: Intuit would answer the first requestid's fault again
    [fixed] = qbo.connector().deliver([item(10, receipt("ch-0010"), attempts=1)])
    assert fixed.ok, fixed.error
    assert len(qbo.company.all("SalesReceipt")) == 1
