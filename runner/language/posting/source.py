"""Postings for the planner: resolved lazily, only when a template reads them.

``PostingSource.for_event(event)`` finds the movement the event books, its balance
transaction (expanded in the event, pinned by a flow test, cached in the store,
or fetched from Stripe) and builds the :class:`Posting`. Templates see a
:class:`LazyPosting`: nothing is fetched unless a template reads ``posting`` or
``doc``.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Callable, Mapping

from runner.language.posting.build import build_posting, category_of
from runner.language.posting.events import movement_of
from runner.language.posting.fetch import FetchError
from runner.language.posting.model import DocumentView, Posting, PostingError
from runner.language.posting.policy import AccountingPolicy, load_accounting


class PostingSource:
    def __init__(self, policy: AccountingPolicy, *, objects: Any = None, rates: Any = None,
                 offline_hint: str = ""):
        self.policy = policy
        self.objects = objects          # StripeObjects, or None (no Stripe API: only expanded/pinned)
        self._rates = rates
        self.offline_hint = offline_hint

    @classmethod
    def for_app(cls, app: Any) -> "PostingSource":
        policy = load_accounting(app.project.raw, app.project.settings, app.project.file)
        objects = None
        stripe_raw = app.project.raw.get("stripe") or {}
        if stripe_raw.get("api_key"):
            from runner.language.posting.fetch import StripeObjects
            objects = StripeObjects(app)
        return cls(policy, objects=objects, rates=lambda: _rate_provider(app),
                   offline_hint=f"set stripe.api_key in {app.project.file}")

    def rate(self, base: str, quote: str, on: str):
        provider = self._rates() if callable(self._rates) else self._rates
        if provider is None:
            raise PostingError(f"no rate provider for {base}->{quote}")
        return provider.rate(base, quote, date.fromisoformat(on))

    def for_event(self, event: Mapping[str, Any], pinned_bt: Mapping[str, Any] | None = None) -> Posting:
        mv = movement_of(event)
        obj = mv.obj
        bt: Any = mv.bt
        if mv.charge_ref:
            if self.objects is None:
                raise FetchError(f"event {event.get('id')}: payment intent {obj.get('id')}'s charge "
                                 f"{mv.charge_ref} must be read from Stripe: {self.offline_hint}", transient=False)
            obj = self.objects.charge(mv.charge_ref, mv.account)
            bt = obj.get("balance_transaction")
        if not isinstance(bt, Mapping):
            if pinned_bt is not None:
                bt = pinned_bt
            elif self.objects is None:
                raise FetchError(f"event {event.get('id')}: balance transaction {bt} must be read from Stripe "
                                 f"(webhooks carry only its id): {self.offline_hint}, or pin it in a flow test "
                                 "(lookups: {balance_transaction: {...}})", transient=False)
            else:
                bt = self.objects.balance_transaction(str(bt), mv.account)
        # the balance transaction says what moved; one that carries neither category nor type: the event
        kind = category_of(bt) if (bt.get("reporting_category") or bt.get("type")) else mv.kind
        return build_posting(obj, bt, self.policy, account=mv.account, rates=self.rate, kind=kind)


def _rate_provider(app: Any):
    from runner.core.fx import rate_chain
    from runner.store.fx_rates import RateCache
    settings = app.project.settings
    return rate_chain(settings.get("fx_provider", "ecb"), settings, settings.get("fx_rates") or {},
                      cache=RateCache(app.store))


class LazyPosting:
    """``posting`` in templates: the Posting, built on first read."""

    __slots__ = ("_fn", "_value")

    def __init__(self, fn: Callable[[], Posting]):
        self._fn = fn
        self._value: Posting | None = None

    def resolve(self) -> Posting:
        if self._value is None:
            self._value = self._fn()
        return self._value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def record(self) -> dict[str, Any]:
        """What the store keeps with each delivery of this movement (for reconciliation)."""
        p = self.resolve()
        return {"kind": p.kind, "key": p.key, "balance_transaction": p.balance_transaction, "source": p.source,
                "account": p.account, "books": p.books, "currency": p.currency, "gross": p.gross, "fee": p.fee,
                "net": p.net, "settlement_currency": p.settlement_currency, "settlement_amount": p.settlement_amount}


class LazyDocument:
    """``doc`` in templates: the posting as the route's books take it (see DocumentView)."""

    __slots__ = ("_posting", "_multicurrency", "_value")

    def __init__(self, posting: LazyPosting, multicurrency: bool):
        self._posting = posting
        self._multicurrency = multicurrency
        self._value: DocumentView | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._value is None:
            self._value = DocumentView(self._posting.resolve(), self._multicurrency)
        return getattr(self._value, name)
