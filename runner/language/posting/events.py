"""Which money movement a Stripe event books, and where its balance transaction is.

Each movement is booked once, keyed by the id of what moved the money
(ACCOUNTING.md). The table below is also what ``validate`` uses to refuse two
flows booking the same movement into the same books.

| event types | movement | object | balance transaction |
| --- | --- | --- | --- |
| charge.succeeded, charge.captured, payment_intent.succeeded | charge | the charge (a payment intent's ``latest_charge``) | ``charge.balance_transaction`` (an id: fetched) |
| refund.created, refund.updated, charge.refund.updated | refund | the refund | ``refund.balance_transaction`` |
| refund.updated, charge.refund.updated (status failed) | refund_failure | the refund | ``refund.failure_balance_transaction`` |
| charge.dispute.funds_withdrawn | dispute | the dispute | ``dispute.balance_transactions`` (category dispute) |
| charge.dispute.funds_reinstated | dispute_reversal | the dispute | ``dispute.balance_transactions`` (category dispute_reversal) |
| application_fee.created | platform_earning | the application fee | ``application_fee.balance_transaction`` |
| application_fee.refunded, application_fee.refund.updated | platform_earning_refund | the newest fee refund | its ``balance_transaction`` |
| transfer.created | transfer | the transfer | ``transfer.balance_transaction`` |
| payout.paid | payout | the payout | ``payout.balance_transaction`` |
| payout.failed | payout_reversal | the payout | ``payout.failure_balance_transaction`` |

``charge.refunded`` is not a movement: it carries the charge's *cumulative*
``amount_refunded``, so booking it books partial refunds more than once.
"""

from __future__ import annotations

from typing import Any, Mapping

from runner.language.posting.model import PostingError

MOVEMENTS: dict[str, str] = {
    "charge.succeeded": "charge", "charge.captured": "charge", "payment_intent.succeeded": "charge",
    "refund.created": "refund", "refund.updated": "refund", "charge.refund.updated": "refund",
    "charge.dispute.funds_withdrawn": "dispute", "charge.dispute.funds_reinstated": "dispute_reversal",
    "application_fee.created": "platform_earning", "application_fee.refunded": "platform_earning_refund",
    "application_fee.refund.updated": "platform_earning_refund", "transfer.created": "transfer",
    "payout.paid": "payout", "payout.failed": "payout_reversal",
}

NOT_MOVEMENTS = {
    "charge.refunded": "charge.refunded carries the charge's cumulative amount_refunded, so partial refunds would "
                       "be booked more than once: book refunds from refund.created / refund.updated (each refund "
                       "by its re_ id)",
    "charge.dispute.created": "a dispute moves money when Stripe withdraws the funds: book "
                              "charge.dispute.funds_withdrawn (and funds_reinstated when won)",
    "charge.dispute.closed": "a closed dispute moves no money: book charge.dispute.funds_withdrawn and "
                             "charge.dispute.funds_reinstated",
}


def movement_for(event_type: str) -> str | None:
    return MOVEMENTS.get(event_type)


def _id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("id")
    return value if isinstance(value, str) else None


class Movement:
    """The object that moved money and a reference to its balance transaction."""

    def __init__(self, kind: str, obj: Mapping[str, Any], bt: Any, account: str | None,
                 charge_ref: str | None = None):
        self.kind = kind
        self.obj = obj
        self.bt = bt                    # a dict (already expanded) or an id
        self.account = account
        self.charge_ref = charge_ref    # a payment intent's charge, still to fetch

    @property
    def bt_id(self) -> str | None:
        return _id(self.bt)


def movement_of(event: Mapping[str, Any]) -> Movement:
    etype = str(event.get("type") or "")
    obj = (event.get("data") or {}).get("object") or {}
    account = event.get("account") if isinstance(event.get("account"), str) else None
    kind = MOVEMENTS.get(etype)
    if kind is None:
        why = NOT_MOVEMENTS.get(etype, "it is not one of the money movements ledgerflow books "
                                       f"({', '.join(sorted(MOVEMENTS))})")
        raise PostingError(f"event {event.get('id')} ({etype}): no posting: {why}")
    if etype == "payment_intent.succeeded":
        charge = obj.get("latest_charge")
        if isinstance(charge, Mapping):
            return Movement(kind, charge, charge.get("balance_transaction"), account)
        if not isinstance(charge, str):
            raise PostingError(f"event {event.get('id')}: payment intent {obj.get('id')} has no latest_charge")
        return Movement(kind, obj, None, account, charge_ref=charge)
    if kind in ("dispute", "dispute_reversal"):
        bts = [b for b in obj.get("balance_transactions") or [] if isinstance(b, Mapping)]
        want = "dispute" if kind == "dispute" else "dispute_reversal"
        match = [b for b in bts if b.get("reporting_category") == want]
        if not match:   # older objects without reporting_category: first = withdrawal, second = reinstatement
            match = bts[:1] if kind == "dispute" else bts[1:2]
        if not match:
            raise PostingError(f"event {event.get('id')}: dispute {obj.get('id')} lists no {want} balance "
                               "transaction")
        return Movement(kind, obj, match[-1], account)
    if etype == "application_fee.refunded":
        refunds = [r for r in ((obj.get("refunds") or {}).get("data") or []) if isinstance(r, Mapping)]
        if not refunds:
            raise PostingError(f"event {event.get('id')}: application fee {obj.get('id')} lists no refund")
        newest = max(refunds, key=lambda r: (r.get("created") or 0, r.get("id") or ""))
        newest = {**newest, "currency": newest.get("currency") or obj.get("currency")}
        return Movement(kind, newest, newest.get("balance_transaction"), account)
    if etype == "payout.failed":
        return Movement(kind, obj, obj.get("failure_balance_transaction"), account)
    if kind == "refund" and obj.get("status") == "failed" and obj.get("failure_balance_transaction"):
        # the refund failed after money left: Stripe puts it back with a balance transaction of its own
        # (refund_failure), keyed by it; the refund itself was booked when it was created
        return Movement("refund_failure", obj, obj.get("failure_balance_transaction"), account)
    if obj.get("balance_transaction") in (None, ""):
        raise PostingError(f"event {event.get('id')} ({etype}): {obj.get('object', 'object')} {obj.get('id')} has "
                           "no balance_transaction yet (Stripe sets it once money moved)")
    return Movement(kind, obj, obj.get("balance_transaction"), account)
