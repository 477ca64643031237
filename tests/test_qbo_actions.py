"""Every QBO action's schema against the fields Intuit requires for that entity, and the
multicurrency hook."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from connectors.quickbooks_online.actions import ACTIONS, ENTITIES, check_payload
from tests.standins.qbo import REQUIRED, Company, Fault, QboStandin

ACC = {"value": "1"}
SAMPLES = {
    "sales_receipt": {"Line": [{"Amount": Decimal("5"), "DetailType": "SalesItemLineDetail",
                                "SalesItemLineDetail": {"ItemRef": {"value": "2"}}}]},
    "refund_receipt": {"DepositToAccountRef": ACC, "Line": [{"Amount": Decimal("5"), "DetailType": "SalesItemLineDetail",
                                                             "SalesItemLineDetail": {"ItemRef": {"value": "2"}}}]},
    "credit_memo": {"CustomerRef": {"value": "3"}, "Line": [{"Amount": Decimal("5"), "DetailType": "SalesItemLineDetail",
                                                             "SalesItemLineDetail": {"ItemRef": {"value": "2"}}}]},
    "deposit": {"DepositToAccountRef": ACC, "Line": [{"Amount": Decimal("5"), "DetailType": "DepositLineDetail",
                                                      "DepositLineDetail": {"AccountRef": ACC}}]},
    "journal_entry": {"Line": [{"Amount": Decimal("5"), "DetailType": "JournalEntryLineDetail",
                                "JournalEntryLineDetail": {"PostingType": p, "AccountRef": ACC}}
                               for p in ("Debit", "Credit")]},
    "purchase": {"PaymentType": "Cash", "AccountRef": ACC, "Line": [
        {"Amount": Decimal("5"), "DetailType": "AccountBasedExpenseLineDetail",
         "AccountBasedExpenseLineDetail": {"AccountRef": ACC}}]},
    "transfer": {"TxnDate": "2024-05-01", "FromAccountRef": ACC, "ToAccountRef": ACC, "Amount": Decimal("5")},
    "customer": {"DisplayName": "A Customer"},
}


# Intuit needs neither DocNumber nor TxnDate; ledgerflow needs one of them on every transaction,
# so that a retry after a lost response finds the document it may already have created.
for _action, _sample in SAMPLES.items():
    if _action not in ("customer", "transfer"):
        _sample["TxnDate"] = "2024-05-01"


def validator(action):
    return Draft202012Validator(ACTIONS[action].schema, format_checker=FormatChecker())


def company() -> Company:
    co = QboStandin().company("1")
    co.add("Account", {"Name": "A"})     # Id 101
    co.add("Item", {"Name": "I"})
    co.add("Customer", {"DisplayName": "C"})
    return co


def ids(payload, co=None):
    """The sample with its refs pointing at the company's records (Ids 101-103)."""
    if isinstance(payload, dict):
        if set(payload) == {"value"}:
            return {"value": {"1": "101", "2": "102", "3": "103"}[payload["value"]]}
        return {k: ids(v) for k, v in payload.items()}
    if isinstance(payload, list):
        return [ids(v) for v in payload]
    return payload


def test_every_action_has_a_sample_and_an_entity():
    assert set(ACTIONS) == set(SAMPLES) == set(ENTITIES)


@pytest.mark.parametrize("action", sorted(SAMPLES))
def test_schema_requires_what_intuit_requires(action):
    entity = ENTITIES[action][0]
    schema = ACTIONS[action].schema
    assert set(REQUIRED[entity]) <= set(schema["required"])
    assert not list(validator(action).iter_errors(SAMPLES[action]))
    # the stand-in (Intuit's rules) accepts the minimal valid payload ...
    co = company()
    QboStandin().do_create(co, entity, ids(SAMPLES[action], co))
    # ... and rejects it without each field Intuit requires, as the schema does
    for field in REQUIRED[entity]:
        broken = copy.deepcopy(SAMPLES[action])
        broken.pop(field)
        errors = list(validator(action).iter_errors(broken))
        assert any(field in e.message for e in errors), (field, [e.message for e in errors])
        with pytest.raises(Fault) as exc:
            QboStandin().do_create(company(), entity, ids(broken, co))
        assert exc.value.body["Fault"]["Error"][0]["element"] == field


@pytest.mark.parametrize("action", sorted(a for a in SAMPLES if a not in ("customer", "transfer")))
def test_a_document_needs_a_docnumber_or_a_date_to_be_found_again(action):
    undated = {k: v for k, v in SAMPLES[action].items() if k != "TxnDate"}
    assert list(validator(action).iter_errors(undated))
    assert not list(validator(action).iter_errors({**undated, "DocNumber": "ch-1"}))


@pytest.mark.parametrize("action", sorted(SAMPLES))
def test_unknown_fields_and_long_docnumbers_are_refused(action):
    assert list(validator(action).iter_errors({**SAMPLES[action], "DocNumbr": "x"}))
    if "DocNumber" in ACTIONS[action].schema["properties"]:
        errors = list(validator(action).iter_errors({**SAMPLES[action], "DocNumber": "x" * 22}))
        assert any("too long" in e.message for e in errors)


def test_line_details_require_their_account_and_journal_must_balance():
    bad = copy.deepcopy(SAMPLES["purchase"])
    bad["Line"][0]["AccountBasedExpenseLineDetail"] = {}
    assert any("AccountRef" in e.message for e in validator("purchase").iter_errors(bad))
    unbalanced = copy.deepcopy(SAMPLES["journal_entry"])
    unbalanced["Line"][0]["Amount"] = Decimal("6")
    assert ACTIONS["journal_entry"].check(unbalanced) == ["journal entry does not balance: debits 6 != credits 5"]
    ref = {"DisplayName": "x", "PrimaryEmailAddr": {"Address": "not-an-email"}}
    assert list(validator("customer").iter_errors(ref))


def test_multicurrency_hook():
    eur = {**SAMPLES["sales_receipt"], "CurrencyRef": {"value": "EUR"}}
    assert check_payload("sales_receipt", eur, {"multicurrency": True}, {"home_currency": "USD"}) == []
    [msg] = check_payload("sales_receipt", eur, {"multicurrency": False}, {"home_currency": "USD"})
    assert "CurrencyRef EUR" in msg and "home currency USD" in msg
    usd = {**SAMPLES["sales_receipt"], "CurrencyRef": {"value": "USD"}}
    assert check_payload("sales_receipt", usd, {"multicurrency": False}, {"home_currency": "USD"}) == []
    assert check_payload("sales_receipt", eur, {"multicurrency": False, "home_currency": "EUR"},
                         {"home_currency": "USD"}) == []
