"""The project's accounting policy: ``accounting:`` in ledgerflow.yaml.

```yaml
accounting:
  accounts:                            # ledger account names, as the books call them
    clearing: Stripe Clearing          # mirrors the Stripe balance
    bank: Operating Bank
    sales: Sales
    refunds: Sales Refunds
    stripe_fees: Stripe Fees
    chargebacks: Chargebacks
    dispute_fees: Dispute Fees
    application_fee_revenue: Application Fee Revenue
    platform_fees: Platform Fees       # a connected account's books: the application fee it pays
    connected_accounts_payable: Connected Accounts Payable
    cost_of_sales: Cost of Sales
    adjustments: Stripe Adjustments
    fx_gain_loss: FX Gain/Loss
  connect:
    destination_charges: agent         # agent | principal
    account_books: {}                  # acct_... -> connection holding that account's own books (optional)
```

Defaults come from the project's ``vars`` (``clearing_account``, ``bank_account``,
``sales_account``, ``refunds_account``, ``fees_account``) so older projects keep
their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from runner.core.errors import LedgerflowError

ROLES = ("clearing", "bank", "sales", "refunds", "stripe_fees", "chargebacks", "dispute_fees",
         "application_fee_revenue", "platform_fees", "connected_accounts_payable", "cost_of_sales",
         "adjustments", "fx_gain_loss")

DEFAULT_ACCOUNTS = {
    "clearing": "Stripe Clearing", "bank": "Operating Bank", "sales": "Sales", "refunds": "Sales Refunds",
    "stripe_fees": "Stripe Fees", "chargebacks": "Chargebacks", "dispute_fees": "Dispute Fees",
    "application_fee_revenue": "Application Fee Revenue", "platform_fees": "Platform Fees",
    "connected_accounts_payable": "Connected Accounts Payable", "cost_of_sales": "Cost of Sales",
    "adjustments": "Stripe Adjustments", "fx_gain_loss": "FX Gain/Loss",
}
_FROM_VARS = {"clearing": "clearing_account", "bank": "bank_account", "sales": "sales_account",
              "refunds": "refunds_account", "stripe_fees": "fees_account"}
TREATMENTS = ("agent", "principal")


class PolicyError(LedgerflowError):
    pass


@dataclass(frozen=True)
class AccountingPolicy:
    home_currency: str = "USD"
    timezone: str = "UTC"
    accounts: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ACCOUNTS))
    destination_charges: str = "agent"
    account_books: Mapping[str, str] = field(default_factory=dict)   # acct_... -> connection name

    def account(self, role: str) -> str:
        return self.accounts.get(role) or DEFAULT_ACCOUNTS[role]


def load_accounting(project_raw: Mapping[str, Any], settings: Mapping[str, Any], where: str = "ledgerflow.yaml"
                    ) -> AccountingPolicy:
    raw = project_raw.get("accounting") or {}
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: accounting: expected a mapping (accounts, connect)")
    vars_ = project_raw.get("vars") or {}
    accounts = dict(DEFAULT_ACCOUNTS)
    for role, var in _FROM_VARS.items():
        if isinstance(vars_, Mapping) and vars_.get(var):
            accounts[role] = str(vars_[var])
    given = raw.get("accounts") or {}
    if not isinstance(given, Mapping):
        raise PolicyError(f"{where}: accounting.accounts: expected role -> account name")
    for role, name in given.items():
        if role not in ROLES:
            raise PolicyError(f"{where}: accounting.accounts.{role}: unknown role (expected one of {', '.join(ROLES)})")
        accounts[str(role)] = str(name)
    connect = raw.get("connect") or {}
    treatment = connect.get("destination_charges", "agent")
    if treatment not in TREATMENTS:
        raise PolicyError(f"{where}: accounting.connect.destination_charges: expected agent or principal, "
                          f"got {treatment!r}")
    books = connect.get("account_books") or {}
    return AccountingPolicy(home_currency=str(settings.get("home_currency", "USD")).upper(),
                            timezone=str(settings.get("timezone", "UTC")), accounts=accounts,
                            destination_charges=treatment, account_books=dict(books))
