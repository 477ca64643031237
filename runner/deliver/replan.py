"""A flow that could not plan an event keeps its place in the delivery queue.

When a flow fails to plan an event (a balance transaction Stripe could not give
yet, a mapping error, a movement the flow cannot book), the dispatcher writes a
*plan row*: a delivery row of the pseudo-connection ``(plan)`` for that flow and
event, keyed ``plan:<flow>:<event id>``. The other flows' rows for the event are
written as usual; nothing waits for the broken flow.

The rows themselves (their key, their operation) are runner/ingest/plan_rows.py's, which the
dispatcher writes. The delivery loop treats plan rows like any other delivery: :class:`PlanConnector`
plans the stored event again with the current flow files and writes the
operations' rows; a transient failure (Stripe unreachable, rate limited) is
retried with the flow's backoff; anything else is dead-lettered with its
``file:line:col`` message, alerted on Slack like every dead letter, and replayed
with ``ledgerflow dlq replay ID`` once the flow is fixed.
"""

from __future__ import annotations

from typing import Any

from connectors.base import ErrorKind, Item, Outcome, TargetError
from runner.core import jsonio
from runner.core.errors import LedgerflowError
from runner.ingest.plan_rows import CONNECTION, ROUTE, TYPE, PlanOperation, plan_key, transient  # noqa: F401 - re-exported


class PlanConnector:
    """Plans a stored event again with the current flow; writes the operations' rows."""

    type = TYPE
    actions: dict = {}

    def __init__(self, app: Any):
        self.app = app

    def deliver(self, items: list[Item]) -> list[Outcome]:
        return [self._one(item) for item in items]

    def _one(self, item: Item) -> Outcome:
        app = self.app
        flow_name = item.payload.get("flow")
        event_id = item.payload.get("event_id")
        row = app.store.get_event(event_id) if event_id else None
        if row is None:
            return Outcome.failed(item, TargetError(f"event {event_id} is no longer in the inbox",
                                                    ErrorKind.PERMANENT))
        flows = app.flows(reload=True)
        if flow_name not in flows:
            return Outcome.failed(item, TargetError(f"flow {flow_name!r} no longer exists under {app.flow_dir()}; "
                                                    f"discard this with `ledgerflow dlq discard {item.delivery_id} "
                                                    "--reason ...`", ErrorKind.PERMANENT))
        flow = flows[flow_name]
        event = jsonio.loads(row["payload"])
        if (flow.raw or {}).get("reconcile") is not None:
            return self._reconcile(item, flow, event)
        try:
            ops = app.plan_event(event, flow)
        except LedgerflowError as exc:
            kind = ErrorKind.RETRYABLE if transient(exc) else ErrorKind.PERMANENT
            fix = "" if transient(exc) else (f" — fix the flow or mapping (check it with `ledgerflow preview "
                                              f"{flows[flow_name].file} --event ...`), then `ledgerflow dlq replay "
                                              f"{item.delivery_id}`")
            return Outcome.failed(item, TargetError(f"flow {flow_name} cannot plan event {event_id}: {exc}{fix}",
                                                    kind))
        created = app.store.add_deliveries(ops) if ops else []
        new = sum(1 for _, c in created if c)
        return Outcome.sent(item, f"planned {len(ops)} operation(s), {new} new")

    def _reconcile(self, item: Item, flow: Any, event: dict) -> Outcome:
        """A payout event's reconciliation that failed at dispatch (Stripe unreachable, say): run it
        again; every failure is retried with the flow's backoff, then dead-lettered and alerted."""
        from runner.ingest.dispatch import reconcile_payout
        try:
            reconcile_payout(self.app, flow, event)
        except Exception as exc:  # noqa: BLE001 - retried like any target error; the message says what
            return Outcome.failed(item, TargetError(
                f"the reconciliation of {event.get('data', {}).get('object', {}).get('id')} (flow {flow.name}) "
                f"failed: {type(exc).__name__}: {exc} — it runs again; `ledgerflow reconcile payouts --payout ...` "
                "runs it by hand", ErrorKind.RETRYABLE))
        return Outcome.sent(item, "reconciled")

    def close(self) -> None:
        pass
