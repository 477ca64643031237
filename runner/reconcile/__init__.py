"""Payout reconciliation (clearing-account model).

``reconcile(app, flow, ...)`` lists each automatic payout (the platform's and
each connected account's through ``Stripe-Account``), streams its balance
transactions, proves payout amount == sum of net, classifies each transaction
against what was booked, and writes the payout's bookings as delivery rows for
the flow's target. ``run_from_flow`` is what scheduled, event-triggered and
manual Prefect runs call; inside a flow run it leaves the report artifacts.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from runner.core.errors import LedgerflowError
from runner.reconcile.engine import Progress, Reconciler, RunReport
from runner.reconcile.policy import Policy, load_policy

__all__ = ["reconcile", "run_from_flow", "make_source", "RunReport", "Policy", "load_policy"]

EVENT_TYPES = ("payout.paid", "payout.reconciliation_completed", "payout.failed")


def make_source(app, page_size: int = 100):
    from runner.language.stripe_client import stripe_client
    from runner.reconcile.source import StripeSource
    return StripeSource(stripe_client(app), page_size=page_size)


def _connected(app) -> list[str]:
    from runner.language.stripe_config import stripe_settings
    return stripe_settings(app.project.raw.get("stripe"), app.project.file).connected_accounts


def reconcile(app, flow, *, since: date | None = None, until: date | None = None, account: str | None = None,
              payout: str | None = None, book: bool = True, progress: Progress | None = None,
              source=None, run_id: str | None = None) -> RunReport:
    policy = load_policy(flow, app.project.settings, _connected(app))
    source = source or make_source(app, policy.page_size)
    rec = Reconciler(app, policy, source, flow=flow, book=book, progress=progress, run_id=run_id)
    accounts = [account] if account else None
    if account == "platform":
        accounts = [None]
    return rec.run(since=since, until=until, accounts=accounts, payout_ids=[payout] if payout else None)


def _date(value: Any, what: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise LedgerflowError(f"{what}: expected a date YYYY-MM-DD, got {value!r}") from None


def run_from_flow(app, flow, params: Mapping[str, Any] | None = None) -> RunReport:
    """Run a reconciliation flow with ``params``: ``since``/``until`` (dates), ``account``,
    ``payout``, ``lookback_days`` (default 2, for scheduled runs), or ``event`` (a
    payout.* Stripe event: reconcile that payout). Inside a Prefect flow run it
    creates the table and markdown artifacts; with exceptions, a Slack summary."""
    params = dict(params or {})
    event = params.get("event")
    payout = params.get("payout")
    account = params.get("account")
    if isinstance(event, Mapping):
        obj = (event.get("data") or {}).get("object") or {}
        if obj.get("object") != "payout":
            raise LedgerflowError(f"{flow.file}: event {event.get('id')}: expected a payout.* event, "
                                  f"got {event.get('type')!r}")
        payout, account = obj["id"], event.get("account") or account
    since, until = _date(params.get("since"), "since"), _date(params.get("until"), "until")
    if payout is None and since is None:
        today = datetime.now(ZoneInfo(app.project.timezone)).date()
        since = today - timedelta(days=int(params.get("lookback_days", 2)))
        until = until or today
    from prefect.runtime import flow_run
    run_id = str(flow_run.id) if flow_run.id else None
    report = reconcile(app, flow, since=since, until=until, account=account, payout=payout,
                       run_id=run_id)
    from runner.reconcile.report import create_artifacts, slack_summary
    if run_id:
        create_artifacts(report)
    slack_summary(app, report, flow.name)
    return report
