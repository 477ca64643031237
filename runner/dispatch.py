"""The dispatcher: pending inbox events -> planned operations -> delivery rows.

For each pending event, every flow whose trigger matches plans it
(``App.plan_event``); the operations become pending delivery rows
(``Store.add_deliveries``) in the same transaction that marks the event:

* ``dispatched``: at least one operation was written;
* ``ignored``: no flow's trigger matches, or every matching flow filtered it out;
* ``failed``: a flow could not plan it; the error (``file:line:col: message``)
  is kept on the event, which stays in the inbox. Operations from the flows
  that did plan it are still written; re-dispatching after the fix
  (``ledgerflow stripe dispatch --retry-failed``) repeats nothing, because
  delivery rows are keyed by idempotency key.

A flow with a ``reconcile:`` section (payout reconciliation) is not planned
event by event: its payout.* events start a reconciliation of that payout
(``runner.scheduled.run_scheduled``; inside a Prefect flow run when a Prefect
API is configured, as under ``ledgerflow serve``, so its report artifacts show
in the UI). The reconciler writes its own booking rows.

Delivering the rows (connectors, retries, the dead-letter queue) is the
delivery loop's job; this module only writes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from . import jsonio
from .errors import LedgerflowError
from .redact import personal_values, scrub
from .replan import PlanOperation, plan_key
from .services import PeriodicService

log = logging.getLogger("ledgerflow.dispatch")


@dataclass
class DispatchSummary:
    events: int = 0
    dispatched: int = 0
    ignored: int = 0
    failed: int = 0
    operations: int = 0
    new_deliveries: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return (f"{self.events} event(s): {self.dispatched} dispatched ({self.new_deliveries} new delivery row(s) "
                f"of {self.operations} operation(s)), {self.ignored} ignored, {self.failed} failed")


def _plan(app: Any, row: dict, later: list | None = None) -> tuple[str, list, str | None, list[str]]:
    """(status, operations, error, flow names) for one inbox row. Payout reconciliations the event
    starts are appended to ``later`` (run once the batch's rows are written), else run now."""
    try:
        event = jsonio.loads(row["payload"])
    except ValueError as exc:
        return "failed", [], f"inbox event {row['event_id']}: stored payload is not JSON ({exc})", []
    flows = app.flows_for(event.get("type", ""))
    if not flows:
        return "ignored", [], None, []
    ops, errors, planned = [], [], []
    for flow in flows:
        if flow.raw.get("reconcile") is not None:
            if later is not None:
                later.append((flow, event))
                planned.append(flow.name)
                continue
            try:
                reconcile_payout(app, flow, event)
                planned.append(flow.name)
            except Exception as exc:  # noqa: BLE001 - keep the event, say why
                errors.append(f"flow {flow.name}: reconciliation failed: {type(exc).__name__}: {exc}")
            continue
        try:
            flow_ops = app.plan_event(event, flow)
        except Exception as exc:  # noqa: BLE001 - a look-up's network error, say; keep the event
            # contained: this flow's work waits in a plan row (retried, or dead-lettered with an
            # alert); the other flows' rows for the event are written now
            text = str(exc) if isinstance(exc, LedgerflowError) else f"{type(exc).__name__}: {exc}"
            text = scrub(text, personal_values(event))
            errors.append(f"flow {flow.name}: {text}")
            ops.append(PlanOperation(flow, event["id"], text))
            continue
        if flow_ops:
            planned.append(flow.name)
            ops.extend(flow_ops)
    if errors:
        return "failed", ops, "\n".join(errors), planned
    return ("dispatched" if ops or planned else "ignored"), ops, None, planned


def prefetch(app: Any, rows: list[dict]) -> int:
    """Fetch, concurrently and within Stripe's read limit, the balance transactions the
    batch's postings will read (flows that read ``posting`` only); the number wanted."""
    from .posting.events import MOVEMENTS, movement_of
    objects = getattr(app.postings, "objects", None)
    if objects is None:
        return 0
    refs = []
    for row in rows:
        if row.get("type") not in MOVEMENTS or not any(f.reads_posting for f in app.flows_for(row["type"])):
            continue
        try:
            mv = movement_of(jsonio.loads(row["payload"]))
        except Exception:  # noqa: BLE001 - planning says what is wrong with it
            continue
        if isinstance(mv.bt, str):
            refs.append((mv.bt, mv.account))
    if refs:
        try:
            objects.balance_transactions(refs)
        except Exception as exc:  # noqa: BLE001 - each event's planning meets (and contains) its own error
            log.warning("prefetching %d balance transaction(s) failed: %s", len(refs), exc)
    return len(refs)


def reconcile_payout(app: Any, flow: Any, event: dict) -> Any:
    """Reconcile the payout an event names, with the reconciliation flow's policy."""
    import os

    from .scheduled import run_scheduled, scheduled_run
    if os.environ.get("PREFECT_API_URL"):
        return scheduled_run(flow_file=str(flow.path), project_file=str(app.project.path), params={"event": event})
    return run_scheduled(app, flow, {"event": event})


def dispatch_pending(app: Any, limit: int = 500, *, statuses: tuple[str, ...] = ("pending",)) -> DispatchSummary:
    """Plan up to ``limit`` inbox events (pending by default) and write their delivery rows."""
    from sqlalchemy import select

    from .store.tables import inbox

    store = app.store
    if statuses == ("pending",):
        rows = store.pending_events(limit)
    else:
        with store.engine.connect() as c:
            rows = [dict(r) for r in c.execute(select(inbox).where(inbox.c.status.in_(statuses))
                                               .order_by(inbox.c.received_at, inbox.c.event_id)
                                               .limit(limit)).mappings()]
    summary = DispatchSummary()
    if not rows:
        return summary
    prefetch(app, rows)
    later: list = []        # payout reconciliations: after this batch's movements have their rows
    results = [(row, *_plan(app, row, later)) for row in rows]
    with store.tx(immediate=True) as conn:
        for row, status, ops, error, planned in results:
            if ops:
                created = store.add_deliveries(ops, conn=conn)
                summary.operations += len(ops)
                summary.new_deliveries += sum(1 for _, new in created if new)
            store.mark_event(row["event_id"], status, flows=",".join(planned) or None, error=error, conn=conn)
            if row.get("status") == "failed":      # re-dispatched: a flow that plans now closes its plan row
                store.close_plan_rows([plan_key(f, row["event_id"]) for f in planned], conn=conn)
            summary.events += 1
            setattr(summary, status, getattr(summary, status) + 1)
            if error:
                summary.errors[row["event_id"]] = error
    for event_id, error in summary.errors.items():
        log.error("event %s failed to plan: %s", event_id, error)   # scrubbed in _plan
    for flow, event in later:
        try:
            reconcile_payout(app, flow, event)
        except Exception as exc:  # noqa: BLE001 - keep the event, say why; --retry-failed runs it again
            error = scrub(f"flow {flow.name}: reconciliation failed: {type(exc).__name__}: {exc}",
                          personal_values(event))
            row = store.get_event(event["id"]) or {}
            store.mark_event(event["id"], "failed", flows=row.get("flows"),
                             error="\n".join(e for e in (row.get("error"), error) if e))
            # the delivery loop runs it again, with the flow's backoff, then dead-letters and alerts
            store.add_deliveries([PlanOperation(flow, event["id"], error)])
            if event["id"] not in summary.errors:
                summary.failed += 1
                summary.dispatched = max(0, summary.dispatched - 1)
            summary.errors[event["id"]] = error
            log.error("event %s failed: %s", event["id"], error)
    return summary


class DispatchService(PeriodicService):
    """Runs ``dispatch_pending`` every ``interval`` seconds (a serve_hooks BACKGROUND service);
    failed passes leave the events pending."""

    name = "dispatcher"

    def __init__(self, app: Any, interval: float = 0.5, limit: int = 500):
        super().__init__(interval)
        self.app = app
        self.limit = limit

    def run_pass(self) -> bool:
        s = dispatch_pending(self.app, self.limit)
        if s.events:
            log.info("dispatch: %s", s.line())
        return s.events == self.limit          # more waiting: go again at once


def background(app: Any) -> DispatchService:
    """serve_hooks.BACKGROUND entry: the dispatcher inside ``ledgerflow serve``."""
    serve = app.project.raw.get("serve") or {}
    return DispatchService(app, interval=float(serve.get("dispatch_interval", 0.5)))
