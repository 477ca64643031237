"""From a Stripe object and its balance transaction to a balanced :class:`Posting`.

The balance transaction is the source of truth for money (ACCOUNTING.md): its
``amount`` (gross, settlement currency, signed), ``fee`` and ``fee_details``,
``net`` and ``exchange_rate``. Every posting is

    clearing            net                      (+ money in, - money out)
    fee accounts        each fee_details entry   (expense; negative when returned)
    the counter account -amount                  (sales, refunds, chargebacks, ...)

which sums to zero because ``net = amount - fee``. When the settlement currency
is not the home currency, each line is converted once (the rate provider's
rate, recorded) and what rounding leaves goes to the FX gain/loss account.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

from runner.core.money import MoneyError, from_minor, round_money, to_minor
from runner.language.posting.model import ZERO, Line, Posting, PostingError
from runner.language.posting.policy import AccountingPolicy

RateFn = Callable[[str, str, str], Any]     # (base, quote, ISO date) -> fx.Rate

# reporting_category -> (counter account role, the counter line's role)
COUNTER = {
    "charge": ("sales", "revenue"),
    "refund": ("refunds", "refund"),
    "refund_failure": ("refunds", "refund"),
    "dispute": ("chargebacks", "dispute"),
    "dispute_reversal": ("chargebacks", "dispute"),
    "platform_earning": ("application_fee_revenue", "application_fee"),
    "platform_earning_refund": ("application_fee_revenue", "application_fee"),
    "payout": ("bank", "bank"),
    "payout_reversal": ("bank", "bank"),
    "transfer": ("connected_accounts_payable", "transfer"),
    "transfer_reversal": ("connected_accounts_payable", "transfer"),
}
# balance transaction `type` -> reporting_category, for objects that lack the category
_TYPE_CATEGORY = {"charge": "charge", "payment": "charge", "refund": "refund", "payment_refund": "refund",
                  "adjustment": "dispute", "application_fee": "platform_earning",
                  "application_fee_refund": "platform_earning_refund", "transfer": "transfer",
                  "transfer_refund": "transfer_reversal", "payout": "payout", "payout_cancel": "payout_reversal",
                  "payout_failure": "payout_reversal", "refund_failure": "refund_failure"}


def category_of(bt: Mapping[str, Any]) -> str:
    cat = bt.get("reporting_category")
    if isinstance(cat, str) and cat:
        return cat
    return _TYPE_CATEGORY.get(str(bt.get("type")), "other_adjustment")


def _minor(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PostingError(f"{what}: expected an integer amount in minor units, got {value!r}")
    return value


def _day(ts: Any, tz: str) -> str:
    try:
        return datetime.fromtimestamp(int(ts), timezone.utc).astimezone(ZoneInfo(tz)).date().isoformat()
    except (TypeError, ValueError, OverflowError):
        raise PostingError(f"expected a Unix timestamp, got {ts!r}") from None


def _id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("id")
    return value if isinstance(value, str) else None


def build_posting(obj: Mapping[str, Any], bt: Mapping[str, Any], policy: AccountingPolicy, *,
                  account: str | None = None, rates: RateFn | None = None, kind: str | None = None,
                  key: str | None = None) -> Posting:
    """The posting of the movement ``obj`` made, as its balance transaction ``bt`` says.

    ``account``: the connected account the movement happened on (the event's ``account``);
    its books are that account's, never the platform's. ``rates`` converts a settlement
    currency other than home. ``kind``/``key`` override what the category gives."""
    bt_id = str(bt.get("id") or "")
    where = f"balance transaction {bt_id or '(no id)'}"
    settle = str(bt.get("currency") or "").upper()
    if len(settle) != 3:
        raise PostingError(f"{where}: no currency")
    amount = _minor(bt.get("amount"), f"{where}.amount")
    fee = _minor(bt.get("fee", 0), f"{where}.fee")
    net = _minor(bt.get("net", amount - fee), f"{where}.net")
    if net != amount - fee:
        raise PostingError(f"{where}: net {net} is not amount {amount} - fee {fee}")
    details = [d for d in (bt.get("fee_details") or []) if isinstance(d, Mapping)]
    if details and sum(_minor(d.get("amount"), f"{where}.fee_details.amount") for d in details) != fee:
        raise PostingError(f"{where}: fee_details do not add up to fee {fee}")
    category = kind or category_of(bt)
    books = account or "platform"
    a = policy.account
    fee_role = "dispute_fee" if category in ("dispute", "dispute_reversal") else "fee"

    def fee_account(d: Mapping[str, Any]) -> tuple[str, str]:
        if fee_role == "dispute_fee":
            return a("dispute_fees"), "dispute_fee"
        if d.get("type") == "application_fee":
            # a connected account's books: the platform's cut is an expense of that account
            return a("platform_fees"), "platform_fee"
        return a("stripe_fees"), "fee"

    cur = settle
    raw: list[tuple[str, int, str]] = [(a("clearing"), net, "clearing")]
    if details:
        for d in details:
            acc, role = fee_account(d)
            raw.append((acc, _minor(d["amount"], f"{where}.fee_details.amount"), role))
    elif fee:
        acc, role = fee_account({})
        raw.append((acc, fee, role))
    raw.extend(_counter(category, -amount, obj, bt, policy))

    try:
        settled = [(acc, from_minor(v, cur), role) for acc, v, role in raw if v != 0]
    except MoneyError as exc:
        raise PostingError(f"{where}: {exc}") from None
    home = policy.home_currency
    date = _day(bt.get("created") or obj.get("created"), policy.timezone)
    home_rate = None
    if cur != home:
        if rates is None:
            raise PostingError(f"{where}: settled in {cur}, not the home currency {home}, and no rate provider")
        rate = rates(cur, home, date)
        home_rate = rate.record()
        lines = [Line(acc, round_money(v * rate.rate, home), role) for acc, v, role in settled]
        residue = sum((ln.amount for ln in lines), ZERO)
        if residue:
            lines.append(Line(a("fx_gain_loss"), -residue, "fx", f"rounding {cur}->{home}"))
    else:
        lines = [Line(acc, v, role) for acc, v, role in settled]

    pres_cur = str(obj.get("currency") or settle).upper()
    pres_minor = _captured(obj) if isinstance(obj.get("amount"), int) else abs(amount)
    try:
        pres_amount = abs(from_minor(pres_minor, pres_cur))
    except MoneyError as exc:
        raise PostingError(f"{where}: {exc}") from None
    rate_raw = bt.get("exchange_rate")
    exchange_rate = Decimal(str(rate_raw)) if rate_raw not in (None, "") else None
    if exchange_rate is None and pres_cur != settle:
        raise PostingError(f"{where}: {pres_cur} converted to {settle} without an exchange_rate")
    clearing = sum((ln.amount for ln in lines if ln.role == "clearing"), ZERO)
    counter = [ln for ln in lines if ln.role not in ("clearing", "fee", "dispute_fee", "platform_fee", "fx")]
    gross = abs(sum((ln.amount for ln in counter), ZERO))
    fee_home = sum((ln.amount for ln in lines if ln.role in ("fee", "dispute_fee", "platform_fee")), ZERO)
    src = _id(obj.get("id")) or _id(bt.get("source")) or bt_id
    memo = f"Stripe {category.replace('_', ' ')} {src}"
    if pres_cur != settle:
        memo += f" ({pres_cur} {pres_amount} at {exchange_rate})"
    if home_rate:
        memo += f" ({settle}->{home} {home_rate['rate']} {home_rate['rate_source']} {home_rate['rate_date']})"
    if account:
        memo += f" [{account}]"
    return Posting(kind=category, key=key or _key(category, obj, bt_id), books=books, date=date, currency=home,
                   lines=tuple(lines), gross=gross, fee=fee_home, net=clearing, settlement_currency=settle,
                   settlement_amount=from_minor(amount, settle), presentment_currency=pres_cur,
                   presentment_amount=pres_amount, exchange_rate=exchange_rate, home_rate=home_rate,
                   balance_transaction=bt_id or None, source=src, account=account, memo=memo,
                   customer=_id(obj.get("customer")), fee_details=tuple(dict(d) for d in details))


def _captured(obj: Mapping[str, Any]) -> int:
    """What the customer paid: a charge's captured amount (a partial capture moves less than the
    authorization), else the object's amount."""
    captured = obj.get("amount_captured")
    if obj.get("object") == "charge" and isinstance(captured, int) and not isinstance(captured, bool) \
            and captured > 0:
        return captured
    return int(obj.get("amount") or 0)


def _key(category: str, obj: Mapping[str, Any], bt_id: str) -> str:
    """The id of what moved the money: a charge, a refund, an application fee or its refund,
    a transfer, a payout by their own ids; a dispute's withdrawal and reinstatement, payout
    failures and adjustments by their balance transaction."""
    if category in ("dispute", "dispute_reversal", "payout_reversal", "refund_failure", "transfer_reversal") \
            or not obj.get("id"):
        return bt_id
    return str(obj["id"])


def _counter(category: str, amount: int, obj: Mapping[str, Any], bt: Mapping[str, Any],
             policy: AccountingPolicy) -> list[tuple[str, int, str]]:
    """The counter line(s): ``amount`` is minus the balance transaction's amount."""
    a = policy.account
    if category == "charge" and _id(obj.get("transfer_data", {}).get("destination")
                                    if isinstance(obj.get("transfer_data"), Mapping) else None):
        # a destination charge on the platform: agent keeps only the application fee as revenue
        if policy.destination_charges == "agent":
            # transfer_data[amount]: the platform keeps what it does not transfer (in the charge's
            # currency, converted at Stripe's rate when settled in another). With application_fee_amount,
            # Stripe transfers the whole amount and collects the fee back as its own application fee
            # (platform_earning, booked from application_fee.created): the gross is all payable here.
            td_amount = obj["transfer_data"].get("amount")
            fee_minor = (_captured(obj) - int(td_amount)) if isinstance(td_amount, int) else 0
            rate = bt.get("exchange_rate")
            pres, settle = str(obj.get("currency") or bt.get("currency")), str(bt.get("currency"))
            if rate not in (None, "") and fee_minor and pres.upper() != settle.upper():
                # presentment minor units -> major, at Stripe's rate, -> settlement minor units (once)
                fee_minor = to_minor(from_minor(fee_minor, pres) * Decimal(str(rate)), settle)
            fee_minor = max(0, min(int(fee_minor), -amount))
            return [(a("connected_accounts_payable"), amount + fee_minor, "transfer"),
                    (a("application_fee_revenue"), -fee_minor, "application_fee")]
        return [(a("sales"), amount, "revenue")]
    if category in ("transfer", "transfer_reversal") and policy.destination_charges == "principal":
        return [(a("cost_of_sales"), amount, "transfer")]
    role_account, role = COUNTER.get(category, ("adjustments", "adjustment"))
    return [(a(role_account), amount, role)]
