"""Sage action schemas, semantic checks and references (pure: no network)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.sage.actions import ACTIONS
from connectors.sage.references import REFERENCE_MAX, short_reference


def test_short_keys_are_kept_long_ones_hashed_deterministically_within_25():
    assert short_reference("sage:fee:txn_1") == "sage:fee:txn_1"
    long = "sage:charge:ch_1PgafuB7WZ01zgkWXYmPNZs8"
    a, b = short_reference(long, "invoice"), short_reference(long, "payment")
    assert a == short_reference(long, "invoice") and a != b
    assert a.startswith("LF-") and len(a) == REFERENCE_MAX == 25
    assert short_reference("has space") != "has space"              # only plain characters pass through
    assert short_reference("LF-looks-like-ours").startswith("LF-") and short_reference("LF-x") != "LF-x"


@pytest.mark.parametrize("action,payload,problem", [
    ("journal", {"date": "2026-01-01", "lines": [{"ledger_account": "A", "debit": Decimal("10"), "credit": 0},
                                                {"ledger_account": "B", "debit": 0, "credit": Decimal("9.99")}]},
     "the journal does not balance: debits 10 != credits 9.99"),
    ("journal", {"date": "2026-01-01", "lines": [{"ledger_account": "A", "debit": Decimal("1"), "credit": Decimal("1")},
                                                {"ledger_account": "B", "debit": 0, "credit": 0}]},
     "lines[0]: exactly one of debit and credit must be non-zero"),
    ("other_payment", {"date": "2026-01-01", "bank_account": "Stripe Clearing", "total_amount": Decimal("3"),
                       "lines": [{"ledger_account": "Fees", "amount": Decimal("2.50")}]},
     "lines add up to 2.50, not total_amount 3"),
    ("bank_transfer", {"date": "2026-01-01", "from_bank_account": "Stripe Clearing",
                       "to_bank_account": "stripe clearing", "amount": Decimal("1")},
     "from_bank_account and to_bank_account are the same account"),
    ("sales_invoice_payment", {"date": "2026-01-01", "contact": {"name": "n", "reference": "r"},
                               "lines": [{"description": "d", "ledger_account": "Sales", "unit_price": Decimal("5")}],
                               "payment": {"bank_account": "Stripe Clearing", "amount": Decimal("6")}},
     "payment.amount 6 exceeds the invoice total 5"),
])
def test_semantic_checks_explain_the_problem(action, payload, problem):
    assert any(problem in p for p in ACTIONS[action].check(payload))


def test_schemas_refuse_missing_and_unknown_fields():
    from jsonschema import Draft202012Validator
    v = Draft202012Validator(ACTIONS["sales_invoice_payment"].schema)
    errors = [e.message for e in v.iter_errors({"date": "2026-01-01", "contact": {"name": "n"}, "lines": [],
                                                "amount": 1})]
    assert "'reference' is a required property" in errors
    assert "[] should be non-empty" in errors
    assert any("Additional properties are not allowed ('amount'" in e for e in errors)


def test_mapping_typo_fails_at_validate_naming_the_mapping_line(tmp_path, project_dir):
    from runner.language.validate import validate_paths
    m = project_dir / "mappings" / "sage" / "payout_bank_transfer.yaml"
    m.write_text(m.read_text().replace("amount:", "amuont:"))
    problems, _ = validate_paths([str(project_dir / "flows" / "sage-payouts.yaml")])
    text = "\n".join(map(str, problems))
    assert "payout_bank_transfer.yaml" in text and "amuont" in text
