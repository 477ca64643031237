"""The dispatcher: pending inbox events -> planned operations -> delivery rows.

For each pending event, every flow whose trigger matches plans it
(``App.plan_event``); the operations become pending delivery rows in the same
transaction that marks the event. Events are taken a chunk at a time (``CHUNK``):
claimed (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several dispatchers in serve
and workers never plan an event twice), planned, then written with one INSERT per
table and one UPDATE (runner/store/plans.py); a crash redoes at most a chunk, and an
event that cannot be planned fails alone. Statuses:

* ``dispatched``: at least one operation was written;
* ``ignored``: no flow's trigger matches, or every matching flow filtered it out;
* ``failed``: a flow could not plan it; the error (``file:line:col: message``)
  is kept on the event, which stays in the inbox. Operations from the flows
  that did plan it are still written; re-dispatching after the fix
  (``ledgerflow stripe dispatch --retry-failed``) repeats nothing, because
  delivery rows are keyed by idempotency key.

A flow with a ``reconcile:`` section (payout reconciliation) is not planned
event by event: its payout.* events start a reconciliation of that payout
(``runner.reconcile.trigger``; a flow run of its own, named after the payout,
when a Prefect API is configured, as under ``ledgerflow serve``, so its report
artifacts show in the UI). The reconciler writes its own booking rows.

Delivering the rows (connectors, retries, the dead-letter queue) is the
delivery loop's job; this module only writes them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from runner.core import jsonio
from runner.core.errors import LedgerflowError
from runner.core.redact import personal_values, scrub
from runner.core.services import PeriodicService
from runner.ingest.plan_rows import PlanOperation, plan_key
from runner.store.plans import claim_events, delivery_row, insert_deliveries, mark_events, still_waiting

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


def _load(row: dict) -> Any:
    """The inbox row's event (any JSON value), or the ValueError that says why it is not JSON."""
    try:
        return jsonio.loads(row["payload"])
    except ValueError as exc:
        return exc


def _plan(app: Any, row: dict, later: list | None = None, event: Any = None) -> tuple[str, list, str | None, list[str]]:
    """(status, operations, error, flow names) for one inbox row (``event``: its payload, already
    read by ``_load``). Payout reconciliations the event starts are appended to ``later`` (run once
    the batch's rows are written), else run now."""
    event = _load(row) if event is None else event
    if isinstance(event, ValueError):
        return "failed", [], f"inbox event {row['event_id']}: stored payload is not JSON ({event})", []
    if not isinstance(event, dict):
        return "failed", [], (f"inbox event {row['event_id']}: stored payload is not a JSON object "
                              f"(a Stripe event), it is a JSON {type(event).__name__}"), []
    flows = app.flows_for(event.get("type", ""))
    if not flows:
        return "ignored", [], None, []
    ops, errors, planned = [], [], []
    shared: dict = {}           # the event's posting, built once for every flow that books it
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
            flow_ops = app.plan_event(event, flow, shared=shared)
        except Exception as exc:  # noqa: BLE001 - a look-up's network error, say; keep the event
            # contained: this flow's work waits in a plan row (retried, or dead-lettered with an
            # alert); the other flows' rows for the event are written now
            text = str(exc) if isinstance(exc, LedgerflowError) else f"{type(exc).__name__}: {exc}"
            text = scrub(text, personal_values(event))
            errors.append(f"flow {flow.name}: {text}")
            ops.append(PlanOperation(flow, row["event_id"], text))
            continue
        if flow_ops:
            planned.append(flow.name)
            ops.extend(flow_ops)
    if errors:
        return "failed", ops, "\n".join(errors), planned
    return ("dispatched" if ops or planned else "ignored"), ops, None, planned


@dataclass
class _Planned:
    """One event's plan, ready to write: its delivery (and posting) rows, its new status."""
    row: dict
    status: str
    rows: list = field(default_factory=list)
    error: str | None = None
    flows: list = field(default_factory=list)
    later: list = field(default_factory=list)     # payout reconciliations, run after the rows are written


def _plan_one(app: Any, row: dict, now: float, event: Any = None) -> _Planned:
    """Plan one event; whatever goes wrong is this event's failure, never the chunk's."""
    later: list = []
    try:
        status, ops, error, flows = _plan(app, row, later, event)
        rows = [delivery_row(op, now) for op in ops]
    except Exception as exc:  # noqa: BLE001 - one bad event must not hold up the others
        try:
            known = personal_values(jsonio.loads(row["payload"]))
        except Exception:  # noqa: BLE001
            known = set()
        error = scrub(f"inbox event {row['event_id']}: could not be planned: {type(exc).__name__}: {exc}", known)
        return _Planned(row, "failed", error=error)
    return _Planned(row, status, rows, error, flows, later)


def prefetch(app: Any, rows: list[dict], events: list | None = None) -> int:
    """Fetch, concurrently and within Stripe's read limit, the balance transactions the
    batch's postings will read (flows that read ``posting`` only); the number wanted.
    ``events``: the rows' payloads, already read by ``_load``."""
    from runner.language.posting.events import MOVEMENTS, movement_of
    objects = getattr(app.postings, "objects", None)
    if objects is None:
        return 0
    refs = []
    for i, row in enumerate(rows):
        if row.get("type") not in MOVEMENTS or not any(f.reads_posting for f in app.flows_for(row["type"])):
            continue
        try:
            mv = movement_of(events[i] if events is not None else jsonio.loads(row["payload"]))
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
    """Reconcile the payout an event names, with the reconciliation flow's policy
    (runner/reconcile/trigger.py: a flow run of its own when there is a Prefect API)."""
    from runner.reconcile.trigger import reconcile_payout as run
    return run(app, flow, event)


CHUNK = 250     # events planned, then written in one transaction (a crash redoes at most this many)
PLAN_HOLD = 600.0   # seconds a PostgreSQL chunk may hold its events while it plans them (fetches included)


def dispatch_pending(app: Any, limit: int = 500, *, statuses: tuple[str, ...] = ("pending",),
                     chunk: int = CHUNK) -> DispatchSummary:
    """Plan up to ``limit`` inbox events (pending by default) and write their delivery rows,
    ``chunk`` events per transaction; then run the payout reconciliations they start."""
    summary = DispatchSummary()
    later: list = []        # payout reconciliations: after the movements have their rows
    after, taken = None, 0
    while taken < limit:
        want = min(chunk, limit - taken)
        rows = _dispatch_chunk(app, want, statuses, after, summary, later)
        taken += len(rows)
        if not rows:        # only an empty chunk says nothing is left (rows may change under the lock)
            break
        after = (rows[-1]["received_at"], rows[-1]["event_id"])
    for event_id, error in summary.errors.items():
        log.error("event %s failed to plan: %s", event_id, error)   # scrubbed in _plan
    _reconcile_later(app, later, summary)
    return summary


def _dispatch_chunk(app: Any, want: int, statuses: tuple[str, ...], after: tuple[float, str] | None,
                    summary: DispatchSummary, later: list) -> list[dict]:
    """Claim, plan and write one chunk; the inbox rows read.

    PostgreSQL: the chunk's events stay locked (``SKIP LOCKED`` for other dispatchers)
    from the claim to the commit. SQLite: planned outside the write lock (the webhook
    receiver keeps writing), then only the events still waiting are written.
    """
    store = app.store
    if store.dialect == "postgresql":
        with store.tx(idle_limit=PLAN_HOLD) as conn:
            rows = claim_events(store, conn, want, statuses, after)
            if rows:
                _write(store, conn, _plan_chunk(app, rows), summary, later)
        return rows
    with store.engine.connect() as conn:
        rows = claim_events(store, conn, want, statuses, after)
    if rows:
        planned = _plan_chunk(app, rows)
        with store.tx(immediate=True) as conn:
            waiting = still_waiting(conn, [r["event_id"] for r in rows], statuses)
            _write(store, conn, [p for p in planned if p.row["event_id"] in waiting], summary, later)
    return rows


def _plan_chunk(app: Any, rows: list[dict]) -> list[_Planned]:
    events = [_load(row) for row in rows]       # each payload read once, for the prefetch and the plan
    prefetch(app, rows, events)
    now = time.time()
    return [_plan_one(app, row, now, event) for row, event in zip(rows, events)]


def _write(store: Any, conn: Any, planned: list[_Planned], summary: DispatchSummary, later: list) -> None:
    """The chunk's delivery rows, events and closed plan rows, in the caller's transaction."""
    created = insert_deliveries(store, conn, [r for p in planned for r in p.rows])
    mark_events(conn, [{"event_id": p.row["event_id"], "status": p.status, "flows": ",".join(p.flows) or None,
                        "error": p.error} for p in planned])
    # re-dispatched: a flow that plans the event now closes its plan row
    store.close_plan_rows([plan_key(f, p.row["event_id"]) for p in planned if p.row.get("status") == "failed"
                           for f in p.flows], conn=conn)
    summary.new_deliveries += len(created)
    for p in planned:
        summary.events += 1
        summary.operations += len(p.rows)
        setattr(summary, p.status, getattr(summary, p.status) + 1)
        if p.error:
            summary.errors[p.row["event_id"]] = p.error
        later.extend(p.later)


def _reconcile_later(app: Any, later: list, summary: DispatchSummary) -> None:
    store = app.store
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


class DispatchService(PeriodicService):
    """Runs ``dispatch_pending`` every ``interval`` seconds: a serve_hooks BACKGROUND service, and
    started beside the delivery loop by ``ledgerflow worker``; failed passes leave the events pending."""

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
