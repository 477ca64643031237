"""The Web Connector's queue (``Runtime.qbwc``): what connectors/quickbooks_desktop/webconnector.py
needs from the store, and nothing more: its sessions and requests (``runner.store.qbwc``), claims
and reads of its deliveries, and outcomes recorded through ``runner.outcomes.decide``."""

from __future__ import annotations

from typing import Any, Iterable

from connectors.base import Outcome
from runner.store.qbwc import QbwcStore


class QbwcQueue(QbwcStore):
    def claim(self, worker: str, **kw: Any) -> list[Any]:
        """``Store.claim``: due deliveries (or the given ``ids``) under a lease for ``worker``."""
        return self.store.claim(worker, **kw)

    def find_deliveries(self, **kw: Any) -> list[Any]:
        """``Store.find_deliveries``."""
        return self.store.find_deliveries(**kw)

    def finish(self, results: list[dict], *, worker: str | None = None) -> set[int]:
        """``Store.finish``: next states already decided (a release, a retry)."""
        return self.store.finish(results, worker=worker)

    def record_outcomes(self, outcomes: Iterable[tuple[Any, Outcome]], now: float, *, worker: str) -> list[dict]:
        """Each (delivery, outcome) decided by the runner's retry policy (``runner.outcomes.decide``) and
        recorded; the decisions (id, state, error, ...)."""
        from runner.outcomes import decide
        decisions = [decide(d, o, now) for d, o in outcomes]
        self.store.finish(decisions, worker=worker)
        return decisions
