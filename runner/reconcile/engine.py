"""Reconciling payouts: stream each payout's balance transactions, prove the total,
classify every transaction, book the payout as the policy says.

Only one page of transactions is in memory at a time; what is kept per payout
is running totals and the exceptions.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable
from zoneinfo import ZoneInfo

from runner.core import jsonio
from runner.core.fx import ChainProvider, FxError, Rate, rate_chain
from runner.core.money import from_minor
from runner.language.posting.build import build_posting
from runner.language.posting.events import MOVEMENTS
from runner.language.posting.model import PostingError
from runner.reconcile.booked import bookings_for, postings_for
from runner.reconcile.classify import (
    BOOKED_LATE,
    CONNECTED_BOOKS,
    MATCHED,
    MISMATCH,
    RECONCILED,
    UNBALANCED,
    WITH_PAYOUT,
    Check,
    classify,
    source_ids,
)
from runner.reconcile.journal import Totals, clearing_lines, convert_lines, posted_summary_lines, summary_lines, transfer
from runner.reconcile.policy import Policy
from runner.reconcile.source import StripeReadError, StripeSource
from runner.store import recon
from runner.store.fx_rates import RateCache

Progress = Callable[..., None]


@dataclass
class PayoutResult:
    payout_id: str
    account: str | None
    currency: str
    amount: int                               # minor units, as Stripe sent it
    arrival: str
    status: str                               # reconciled|exceptions|unbalanced|unreconcilable|failed|reversed|in_transit
    reason: str = ""
    transactions: int = 0
    sum_net: int = 0
    counts: Counter = field(default_factory=Counter)
    exceptions: list[Check] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    home_currency: str | None = None
    home_amount: Decimal | None = None
    home_rate: Rate | None = None
    bookings: list[str] = field(default_factory=list)        # idempotency keys written

    @property
    def amount_major(self) -> Decimal:
        return from_minor(self.amount, self.currency)

    @property
    def reconciled(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind in RECONCILED)


@dataclass
class RunReport:
    run_id: str
    results: list[PayoutResult] = field(default_factory=list)

    @property
    def exceptions(self) -> list[tuple[PayoutResult, Check]]:
        return [(r, c) for r in self.results for c in r.exceptions]

    @property
    def transactions(self) -> int:
        return sum(r.transactions for r in self.results)

    @property
    def reconciled_share(self) -> Decimal:
        n = self.transactions
        ok = sum(r.reconciled for r in self.results)
        return Decimal(100) if n == 0 else (Decimal(ok) * 100 / n).quantize(Decimal("0.01"))


def rate_provider(policy: Policy, settings: dict, store) -> ChainProvider:
    return rate_chain(policy.fx_provider, settings, policy.fx_rates, cache=RateCache(store) if store is not None else None,
                      base_url=policy.fx_base_url)


class Reconciler:
    def __init__(self, app, policy: Policy, source: StripeSource, *, flow=None, book: bool = True,
                 progress: Progress | None = None, run_id: str | None = None):
        self.app, self.policy, self.source, self.flow = app, policy, source, flow
        self.book = book and flow is not None
        self.progress = progress or (lambda *a, **k: None)
        self.tz = app.project.timezone
        self.rates = rate_provider(policy, app.project.settings, app.store)
        self.report = RunReport(run_id or uuid.uuid4().hex[:16])
        self._posted_kinds: set[str] | None = None

    # ---- selection -------------------------------------------------------------

    def run(self, *, since: date | None = None, until: date | None = None, accounts: list[str | None] | None = None,
            payout_ids: list[str] | None = None) -> RunReport:
        recon.refresh_index(self.app.store)
        accounts = accounts if accounts is not None else self.policy.accounts
        if payout_ids:
            for pid in payout_ids:
                payout, account = self._find(pid, accounts)
                self.reconcile(payout, account)
        else:
            if since is None:
                raise ValueError("since: a start date is needed when no payout is named")
            for account in accounts:
                for payout in self.source.payouts(account, since, until, self.tz):
                    self.reconcile(payout, account)
        return self.report

    def _find(self, payout_id: str, accounts: list[str | None]) -> tuple[dict, str | None]:
        problems = []
        for account in accounts:
            try:
                return self.source.payout(account, payout_id), account
            except StripeReadError as exc:
                problems.append(str(exc))
        raise StripeReadError(f"payout {payout_id} not found on {', '.join(a or 'the platform' for a in accounts)}: "
                              + "; ".join(problems))

    # ---- one payout --------------------------------------------------------------

    def reconcile(self, payout: dict, account: str | None) -> PayoutResult:
        done = next((r for r in self.report.results if r.payout_id == payout["id"]), None)
        if done is not None:         # reconciled already in this run (a failed payout its return reached first)
            return done
        cur = str(payout["currency"]).upper()
        arrival = self._day(payout.get("arrival_date") or payout.get("created"))
        res = PayoutResult(payout["id"], account, cur, int(payout["amount"]), arrival.isoformat(), "reconciled")
        self.progress("payout", payout=payout, account=account)
        self._home(res, arrival)
        if not payout.get("automatic", True):
            res.status = "unreconcilable"
            res.reason = ("manual payout: Stripe does not tie manual payouts to balance transactions; "
                          "check it against the bank statement")
            return self._done(res)
        if payout.get("reversed_by") or payout.get("original_payout"):
            res.status = "reversed"
            res.reason = (f"reversed by {payout['reversed_by']}" if payout.get("reversed_by")
                          else f"reversal of {payout['original_payout']}") + "; the money stayed in Stripe: not booked"
            return self._done(res)
        totals = Totals(cur.lower(), posted=defaultdict(Decimal) if self.policy.mode == "summary" else None)
        objects = getattr(getattr(self.app, "postings", None), "objects", None)
        for page in self.source.payout_transactions(account, payout["id"]):
            if objects is not None:
                objects.prefill(page, account)      # the postings' fetches find them here
            included = [t for t in page if not (t.get("type") == "payout" and _src_id(t) == payout["id"])]
            ids = [i for t in included for i in source_ids(t)]
            booked = bookings_for(self.app.store, ids, exclude_flow=self.policy.flow) if ids else {}
            posted = postings_for(self.app.store, [t["id"] for t in included], ids, account or "platform",
                                  exclude_flow=self.policy.flow)
            for txn in included:
                check = self._check(txn, booked, posted, account)
                res.counts[check.kind] += 1
                if check.is_exception:
                    res.exceptions.append(check)
                totals.fx_diff += check.fx_diff
                totals.add(txn, check.kind == WITH_PAYOUT, fee_booked=check.fee_booked)
                if self.policy.mode == "summary":
                    self._post(totals, txn, account)
            self.progress("page", payout=payout, count=len(included))
        res.transactions = totals.count
        res.sum_net = totals.net
        res.categories = dict(totals.gross)
        if totals.net != res.amount:
            res.status = "unbalanced"
            diff = from_minor(res.amount - totals.net, cur)
            res.exceptions.append(Check(payout["id"], "payout", UNBALANCED, payout["id"],
                                        f"payout {res.amount_major} {cur} but its {totals.count} transactions net "
                                        f"{from_minor(totals.net, cur)} {cur} (difference {diff})",
                                        "compare the payout with Stripe's payout reconciliation report; "
                                        "nothing was booked"))
            return self._done(res)
        status = payout.get("status")
        if status == "failed":
            res.status = "failed"
            res.reason = f"failed: {payout.get('failure_code') or 'unknown'}; the funds went back to the Stripe balance"
            if self.policy.mode == "summary":
                # its transactions are booked with it, as if paid: the next payout's journal books the
                # payout_failure transaction, which takes the money back out of the bank
                self._book(payout, account, res, totals, arrival)
            else:
                self._book_failed(payout, account, res, totals)
            return self._done(res)
        res.status = "exceptions" if res.exceptions else "reconciled"
        if status != "paid":
            res.reason = f"{status}: reconciled, booked once paid"
            return self._done(res)
        self._book(payout, account, res, totals, arrival)
        return self._done(res)

    def _check(self, txn: dict, booked: dict, posted: dict, account: str | None) -> Check:
        if account is not None and self.flow is not None and not self.books_account(account):
            # the Connect policy: a connected account's movements are its own, and this project keeps
            # no books for it; the payout's total is still proven against its transactions
            return Check(txn["id"], txn.get("reporting_category") or "other", CONNECTED_BOOKS, _src_id(txn),
                         fee_booked=True)
        if (txn.get("reporting_category") == "payout_reversal" and self.policy.mode == "per_transaction"
                and self.book):
            return self._failed_payout_returned(txn, account)
        check = classify(txn, booked, self.policy, posted)
        if not check.fee_booked and check.category in self.posted_kinds():
            check.fee_booked = True         # a flow books this movement with its fee, whenever it is delivered
        return check

    def posted_kinds(self) -> set[str]:
        """Movements that flows reading ``posting`` book (their fees with them, so the payout's
        journal never books those fees, whether or not the movement is delivered yet)."""
        if self._posted_kinds is None:
            self._posted_kinds = {m for flow in self.app.flows().values() if flow.reads_posting
                                  for pattern in flow.stripe_types
                                  for t, m in MOVEMENTS.items() if fnmatch.fnmatchcase(t, pattern)}
        return self._posted_kinds

    def _failed_payout_returned(self, txn: dict, account: str | None) -> Check:
        """A failed payout's funds coming back: booked (out and back) by the reconciliation of that
        payout; when it has not run yet (it arrives later in the listing, or outside the window),
        book it now."""
        po = _src_id(txn)
        check = Check(txn["id"], "payout_reversal", MATCHED, po, fee_booked=True)
        key = f"{self.flow.name}:transfer:recon_{po}_failed"
        if self.app.store.delivery_by_key(key) is None:
            try:
                payout = self.source.payout(account, po)
            except StripeReadError as exc:
                check.kind, check.detail = BOOKED_LATE, f"the failed payout {po} could not be read: {exc}"
                check.fix = f"ledgerflow reconcile payouts --payout {po}"
                return check
            if payout.get("status") != "failed":
                check.kind, check.detail = MISMATCH, f"payout {po} is {payout.get('status')}, yet its funds came back"
                check.fix = "compare the payout with Stripe's dashboard"
                return check
            self.reconcile(payout, account)       # books it out and back, with its journal
        row = self.app.store.delivery_by_key(key)
        if row is None and self.book:
            check.kind, check.detail = BOOKED_LATE, f"the failed payout {po} has not been booked back"
            check.fix = f"ledgerflow reconcile payouts --payout {po}"
        return check

    def _post(self, totals: Totals, txn: dict, account: str | None) -> None:
        """Summary mode: the transaction's posting (the accounting model, as the flows would book it),
        summed by account; the payout's journal is these sums with the bank for the clearing account."""
        postings = getattr(self.app, "postings", None)
        if postings is None or totals.posted is None:
            return
        src = txn.get("source") if isinstance(txn.get("source"), dict) else {}
        try:
            posting = build_posting(src, txn, postings.policy, account=account,        # the policy's rates
                                    rates=lambda b, q, on: self.rates.rate(b, q, date.fromisoformat(on)))
        except (PostingError, FxError) as exc:
            totals.posted = None        # fall back to the category summary, and say why
            totals.posted_error = f"{txn.get('id')}: {exc}"
            return
        for ln in posting.lines:
            totals.posted[(ln.account, ln.role)] += ln.amount

    # ---- booking -------------------------------------------------------------------

    def _book(self, payout: dict, account: str | None, res: PayoutResult, totals: Totals, arrival: date) -> None:
        p = self.policy
        memo = f"Stripe payout {payout['id']}" + (f" ({account})" if account else "")
        params: dict[str, Any] = {"reconciled": True, "mode": p.mode, "transfer": None, "journal": None,
                                  "currency": res.currency, "date": res.arrival}
        if p.mode == "summary" and totals.posted:
            lines = posted_summary_lines(totals, p)
            params["currency"] = p.home_currency
        elif p.mode == "summary":
            lines = summary_lines(totals, res.amount, p)
        else:
            params["transfer"] = {**transfer(res.amount, res.currency, p), "date": res.arrival, "memo": memo,
                                  "currency": res.currency}
            lines = clearing_lines(totals, p)
        if lines:
            if res.home_rate is not None and res.home_currency != res.currency and p.mode == "summary" \
                    and (self.flow.raw.get("reconcile") or {}).get("book_in_home_currency"):
                lines = convert_lines(lines, res.home_rate, p)
            params["journal"] = {"date": res.arrival, "memo": memo, "lines": [l.as_dict() for l in lines],
                                 "currency": params["currency"]}
        if res.home_rate is not None:
            params["rate"] = res.home_rate.record()
        self._write(payout, account, f"recon_{payout['id']}", params, res)

    def _book_failed(self, payout: dict, account: str | None, res: PayoutResult, totals: Totals | None = None
                     ) -> None:
        """A failed payout: the transfer out (its own balance transaction, once) and the reverse
        transfer (the payout_failure balance transaction), so the clearing account mirrors both."""
        if self.flow is None or self.policy.mode != "per_transaction":
            return
        key = f"{self.flow.name}:transfer:recon_{payout['id']}"
        if self.app.store.delivery_by_key(key) is None:
            params = {"reconciled": True, "mode": self.policy.mode, "journal": None, "currency": res.currency,
                      "date": res.arrival, "transfer": {**transfer(res.amount, res.currency, self.policy),
                                                        "date": res.arrival, "currency": res.currency,
                                                        "memo": f"Stripe payout {payout['id']} (failed)"}}
            lines = clearing_lines(totals, self.policy) if totals is not None else []
            if lines:       # what no event books among its transactions (adjustments...), as for a paid one
                params["journal"] = {"date": res.arrival, "memo": f"Stripe payout {payout['id']} (failed)",
                                     "lines": [ln.as_dict() for ln in lines], "currency": res.currency}
            self._write(payout, account, f"recon_{payout['id']}", params, res)
        t = transfer(res.amount, res.currency, self.policy)
        t["from_account"], t["to_account"] = t["to_account"], t["from_account"]
        params = {"reconciled": True, "mode": self.policy.mode, "journal": None, "currency": res.currency,
                  "date": res.arrival, "transfer": {**t, "date": res.arrival, "currency": res.currency,
                                                    "memo": f"Failed Stripe payout {payout['id']} returned"}}
        self._write(payout, account, f"recon_{payout['id']}_failed", params, res)

    def books_account(self, account: str | None) -> bool:
        """The Connect policy: a connected account's payout moves that account's money, so it is
        booked only where that account's own books are (accounting.connect.account_books naming a
        connection this flow books into); the platform's books never get it. It is still checked."""
        if account is None:
            return True
        policy = getattr(getattr(self.app, "postings", None), "policy", None)
        conn = (getattr(policy, "account_books", None) or {}).get(account)
        return conn is not None and conn in {r.target for r in self.flow.routes}

    def _write(self, payout: dict, account: str | None, event_id: str, params: dict, res: PayoutResult) -> None:
        if not self.book or not self.books_account(account):
            return
        event = {"id": event_id, "object": "event", "type": "payout.reconciled", "created": payout.get("created"),
                 "data": {"object": payout}}
        if account:
            event["account"] = account
        ops = self.app.plan_event(event, self.flow, params=params)
        if ops:
            self.app.store.add_deliveries(ops)
        res.bookings.extend(op.idempotency_key for op in ops)

    # ---- helpers ---------------------------------------------------------------------

    def _day(self, ts: Any) -> date:
        return datetime.fromtimestamp(int(ts or 0), ZoneInfo(self.tz)).date()

    def _home(self, res: PayoutResult, on: date) -> None:
        res.home_currency = self.policy.home_currency
        try:
            rate = self.rates.rate(res.currency, self.policy.home_currency, on)
        except FxError as exc:
            res.reason = f"no {res.currency}/{self.policy.home_currency} rate: {exc}"
            return
        res.home_rate = rate
        res.home_amount = rate.convert_rounded(res.amount_major)

    def _done(self, res: PayoutResult) -> PayoutResult:
        exc = [{"txn": c.txn_id, "category": c.category, "kind": c.kind, "object": c.object_id, "detail": c.detail,
                "fix": c.fix} for c in res.exceptions]
        recon.add_result(self.app.store, run_id=self.report.run_id, payout_id=res.payout_id, account=res.account,
                         status=res.status, currency=res.currency, amount=str(res.amount_major),
                         home_amount=str(res.home_amount) if res.home_amount is not None else None,
                         transactions=res.transactions, exceptions=jsonio.dumps(exc))
        self.report.results.append(res)
        self.progress("done", result=res)
        return res


def _src_id(txn: dict) -> str | None:
    s = txn.get("source")
    return s.get("id") if isinstance(s, dict) else s
