"""The reconciliation policy: a flow's ``reconcile:`` section, read into typed settings.

```yaml
reconcile:
  mode: per_transaction          # or summary (one journal per payout)
  accounts: [platform]           # platform and/or acct_...; default: platform + stripe.connected_accounts
  unbooked: journal              # per_transaction: categories no flow books go in a journal with the payout
  fx: {provider: ecb, tolerance: "0.01", gain_loss_account: FX Gain/Loss, rates: {BHD/USD: "2.6596"}}
  ledger_accounts: {clearing: Stripe Clearing, bank: Operating Bank, fees: Stripe Fees,
                    charge: Sales, refund: Sales Refunds, ...}
  expect: {charge: [charge.succeeded], ...}                 # event types that book each category
  booked_amount: {csv.row: {amount: amount, currency: currency, rate: exchange_rate}}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from runner.core.errors import LedgerflowError

MODES = ("per_transaction", "summary")

# Which events book a balance transaction of each reporting category, matched by
# the event's data.object id against the transaction's source (or its payment intent).
DEFAULT_EXPECT: dict[str, list[str]] = {
    "charge": ["charge.succeeded", "charge.captured", "payment_intent.succeeded"],
    "refund": ["refund.created", "charge.refund.updated", "refund.updated"],
    "dispute": ["charge.dispute.funds_withdrawn", "charge.dispute.created"],
    "dispute_reversal": ["charge.dispute.funds_reinstated"],
    "platform_earning": ["application_fee.created"],
    "platform_earning_refund": ["application_fee.refunded", "application_fee.refund.updated"],
    "transfer": ["transfer.created"],
}

# Where a delivery's payload keeps the booked amount (and currency, and the rate
# it used), by "<connector type>.<action>": each connector declares its own
# (ConnectorSpec.booked_amount); a flow's reconcile.booked_amount adds to them.
def default_booked_amount() -> dict[str, dict[str, str]]:
    from connectors import registry
    return registry.booked_amounts()


DEFAULT_LEDGER = {"clearing": "Stripe Clearing", "bank": "Operating Bank", "fees": "Stripe Fees",
                  "fx_gain_loss": "FX Gain/Loss", "charge": "Sales", "refund": "Sales Refunds",
                  "dispute": "Chargebacks", "dispute_reversal": "Chargebacks", "platform_earning": "Platform Fees",
                  "transfer": "Connected Account Transfers", "fee": "Stripe Fees",
                  "other": "Stripe Adjustments"}
# project vars that name ledger accounts (ledgerflow.yaml's vars)
_VARS = {"clearing": "clearing_account", "bank": "bank_account", "fees": "fees_account", "charge": "sales_account",
         "refund": "refunds_account", "fee": "fees_account"}


class PolicyError(LedgerflowError):
    pass


@dataclass
class Policy:
    flow: str
    mode: str = "per_transaction"
    accounts: list[str | None] = field(default_factory=lambda: [None])
    unbooked: str = "journal"
    home_currency: str = "USD"
    fx_provider: str = "ecb"
    fx_tolerance: Decimal = Decimal("0.01")
    fx_rates: dict[str, str] = field(default_factory=dict)
    fx_base_url: str | None = None
    ledger: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LEDGER))
    expect: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_EXPECT.items()})
    booked_amount: dict[str, dict[str, str]] = field(default_factory=default_booked_amount)
    page_size: int = 100

    def account_for(self, category: str) -> str:
        return self.ledger.get(category) or self.ledger["other"]

    @property
    def fx_account(self) -> str:
        return self.ledger["fx_gain_loss"]


def load_policy(flow, settings: Mapping[str, Any], connected_accounts: list[str] | None = None) -> Policy:
    """The policy of a flow (``flow.raw['reconcile']``), every problem named by field."""
    raw = (flow.raw or {}).get("reconcile")
    where = f"{flow.file}: reconcile"
    if raw is None:
        raise PolicyError(f"{where}: the flow has no reconcile section (expected mode, accounts, ledger_accounts...)")
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected a mapping, got {type(raw).__name__}")
    p = Policy(flow=flow.name, home_currency=str(settings.get("home_currency", "USD")).upper(),
               fx_provider=str(settings.get("fx_provider", "ecb")))
    mode = raw.get("mode", p.mode)
    if mode not in MODES:
        raise PolicyError(f"{where}.mode: expected one of {', '.join(MODES)}, got {mode!r}")
    p.mode = mode
    unbooked = raw.get("unbooked", p.unbooked)
    if unbooked not in ("journal", "report"):
        raise PolicyError(f"{where}.unbooked: expected journal or report, got {unbooked!r}")
    p.unbooked = unbooked
    accounts = raw.get("accounts")
    if accounts is None:
        p.accounts = [None, *(connected_accounts or [])]
    else:
        if not isinstance(accounts, list) or not accounts:
            raise PolicyError(f"{where}.accounts: expected a list of platform and/or acct_... ids")
        p.accounts = []
        for i, a in enumerate(accounts):
            if a == "platform":
                p.accounts.append(None)
            elif a == "connected":
                p.accounts.extend(connected_accounts or [])
            elif isinstance(a, str) and a.startswith("acct_"):
                p.accounts.append(a)
            else:
                raise PolicyError(f"{where}.accounts[{i}]: expected platform, connected or an acct_... id, got {a!r}")
    fx = raw.get("fx") or {}
    if not isinstance(fx, Mapping):
        raise PolicyError(f"{where}.fx: expected a mapping (provider, tolerance, gain_loss_account, rates)")
    p.fx_provider = str(fx.get("provider", p.fx_provider))
    tol = fx.get("tolerance", settings.get("fx_tolerance", p.fx_tolerance))
    try:
        p.fx_tolerance = Decimal(str(tol))
    except InvalidOperation:
        raise PolicyError(f"{where}.fx.tolerance: expected a fraction such as \"0.01\" (1%), got {tol!r}") from None
    if p.fx_tolerance < 0 or isinstance(tol, float):
        raise PolicyError(f"{where}.fx.tolerance: expected a non-negative fraction written as a string, got {tol!r}")
    p.fx_rates = {**(settings.get("fx_rates") or {}), **{str(k): str(v) for k, v in (fx.get("rates") or {}).items()}}
    p.fx_base_url = fx.get("base_url")
    for key, var in _VARS.items():
        if var in flow.vars:
            p.ledger[key] = str(flow.vars[var])
    ledger = raw.get("ledger_accounts") or {}
    if not isinstance(ledger, Mapping):
        raise PolicyError(f"{where}.ledger_accounts: expected a mapping of role or category -> account name")
    p.ledger.update({str(k): str(v) for k, v in ledger.items()})
    if fx.get("gain_loss_account"):
        p.ledger["fx_gain_loss"] = str(fx["gain_loss_account"])
    expect = raw.get("expect")
    if expect is not None:
        if not isinstance(expect, Mapping) or not all(isinstance(v, list) for v in expect.values()):
            raise PolicyError(f"{where}.expect: expected reporting_category -> [event types]")
        p.expect = {str(k): [str(t) for t in v] for k, v in expect.items()}
    booked = raw.get("booked_amount") or {}
    for k, v in booked.items():
        if not isinstance(v, Mapping) or "amount" not in v:
            raise PolicyError(f"{where}.booked_amount.{k}: expected {{amount: path, currency: path, rate: path}}")
        p.booked_amount[str(k)] = {str(a): str(b) for a, b in v.items()}
    size = raw.get("page_size", 100)
    if not isinstance(size, int) or not 1 <= size <= 100:
        raise PolicyError(f"{where}.page_size: expected an integer 1..100 (Stripe's list limit), got {size!r}")
    p.page_size = size
    return p
