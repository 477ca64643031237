"""The registry's connector class for ``quickbooks_desktop``.

QuickBooks Desktop is pulled, not pushed: the Web Connector fetches qbXML from
``service.py`` when it polls. A push reaching this class is a wiring mistake;
it hands the items back untouched (throttled, not counted as an attempt).
"""

from __future__ import annotations

from connectors.base import Connector, ErrorKind, Item, Outcome, TargetError

from .actions import ACTIONS


class QuickBooksDesktopConnector(Connector):
    type = "quickbooks_desktop"
    actions = ACTIONS

    def deliver(self, items: list[Item]) -> list[Outcome]:
        err = TargetError("quickbooks_desktop deliveries are pulled by the QuickBooks Web Connector "
                          "(ledgerflow serve, /qbwc), never pushed", ErrorKind.THROTTLED, retry_after=300)
        return [Outcome.failed(i, err) for i in items]
