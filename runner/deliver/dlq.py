"""The dead-letter queue: look, re-plan and replay, or discard with a reason.

Replay is the repair path: fix the mapping (or the flow), then replay. The
stored inbox event is planned again with the *current* flow and mapping
files; the delivery keeps its idempotency key, so a document the target
already created (a lost response) is found, not created twice.

``dlq replay --all`` also re-plans the same flow's rows that are still
*retrying* (``replan_retrying``): planned from the old mapping, they would
otherwise dead-letter later with the old error. A retrying row is re-planned
only when the current files give it a different payload and it is safe to
change: not when the target already holds a document for it (a target
reference), not a plan row (it plans with the current files at its next
attempt anyway), not when the current flow cannot plan it. Each skip is
counted and said, with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.core import jsonio
from runner.core.errors import LedgerflowError
from runner.store.model import Delivery, State


class DlqError(LedgerflowError):
    pass


@dataclass
class Replayed:
    id: int
    replanned: bool        # False: no stored event (the payload was kept as it was)
    changed: bool          # the payload differs from the dead one

    def line(self) -> str:
        how = ("re-planned with the current flow and mappings" + (" (payload changed)" if self.changed
                                                                  else " (payload unchanged)")
               if self.replanned else "no stored event: replaying the stored payload")
        return f"{self.id}: {how}"


def dead(store, *, flow: str | None = None, limit: int | None = None, alert: str | None = None) -> list[Delivery]:
    """Dead deliveries (of a flow); with ``alert``, only those of that Slack alert: the rows whose
    alert group key (``alerts.row_group_key``: flow, target, error shape) starts with it."""
    if not alert:
        return store.find_deliveries(state=State.DEAD, flow=flow or None, limit=limit)
    from runner.deliver.alerts import row_group_key
    rows = [r for r in store.find_deliveries(state=State.DEAD, flow=flow or None)
            if row_group_key(r).startswith(alert.lower())]
    return rows[:limit] if limit else rows


def get_dead(store, delivery_id: int) -> Delivery:
    row = store.delivery(delivery_id)
    if row is None:
        raise DlqError(f"no delivery {delivery_id} (see `ledgerflow dlq list`)")
    if row.state is not State.DEAD:
        raise DlqError(f"delivery {delivery_id} is {row.state}, not in the dead-letter queue")
    return row


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def _current_flow(app, row: Delivery):
    flows = app.flows(reload=True)
    if row.flow in flows:
        return flows[row.flow]
    if row.flow_file:
        try:
            return app.flow(row.flow_file)
        except LedgerflowError:
            pass
    raise DlqError(f"delivery {row.id}: flow {row.flow!r} no longer exists under {app.flow_dir()}; "
                   f"discard it with `ledgerflow dlq discard {row.id} --reason ...`")


def replan(app, row: Delivery) -> tuple[dict, bool]:
    """The new delivery values for a dead row, from its stored event and the current flow."""
    event_row = app.store.get_event(row.event_id) if row.event_id else None
    if event_row is None:
        return {}, False
    if row.connector_type == "plan":      # a flow that could not plan: the delivery loop re-plans it
        return {"payload": jsonio.dumps(row.payload)}, True
    event = jsonio.loads(event_row["payload"])
    try:
        flow = _current_flow(app, row)          # loading the flow compiles its mappings: they may fail here
        ops = app.plan_event(event, flow)
    except DlqError:
        raise
    except LedgerflowError as exc:
        raise DlqError(f"delivery {row.id}: the current flow still cannot plan event {row.event_id}:\n{exc}") \
            from None
    match = [op for op in ops if op.route == row.route]
    if not match:
        why = "filters the event out" if not ops else f"routes it to {', '.join(o.route for o in ops)} only"
        raise DlqError(f"delivery {row.id}: the current flow {flow.name} {why}, not to route {row.route!r}; "
                       f"nothing to replay (discard it with a reason instead)")
    op = match[0]
    return {"payload": jsonio.dumps(op.payload), "action": op.action, "connection": op.connection,
            "connector_type": op.connector_type, "max_attempts": op.max_attempts or row.max_attempts,
            "retry_policy": op.retry_policy or row.retry_policy, "flow_file": op.flow_file}, True


def _requeue(app, row: Delivery, values: dict) -> bool:
    """Make ``row`` due now with ``values``, if it is still as read; True when it was. Attempts keep
    counting, and the flow's budget starts afresh."""
    values = dict(values)
    budget = int(values.pop("max_attempts", None) or row.max_attempts)
    return app.store.requeue(row, values, budget=budget)


def replay(app, delivery_id: int, *, actor: str | None = None) -> Replayed:
    """Re-plan a dead delivery and make it due now, keeping its idempotency key."""
    row = get_dead(app.store, delivery_id)
    values, replanned = replan(app, row)
    changed = replanned and jsonio.loads(values["payload"]) != row.payload
    if not _requeue(app, row, values):
        raise DlqError(f"delivery {delivery_id} left the dead-letter queue meanwhile (replayed by someone else?)")
    app.store.audit("dlq.replay", str(delivery_id),
                    f"flow={row.flow} route={row.route} key={row.idempotency_key} "
                    f"replanned={replanned} changed={changed}", actor=actor)
    return Replayed(delivery_id, replanned, changed)


@dataclass
class RetryingReplan:
    """What ``replan_retrying`` did with the rows still retrying."""
    replanned: list[int] = field(default_factory=list)          # new payload, due now
    unchanged: list[int] = field(default_factory=list)          # same payload: left on their schedule
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (id, why)

    def lines(self) -> list[str]:
        out = []
        if self.replanned:
            out.append(f"{len(self.replanned)} retrying delivery(ies) re-planned with the current flow and mappings "
                       f"(payload changed), due now: {', '.join(map(str, self.replanned))}")
        if self.unchanged:
            out.append(f"{len(self.unchanged)} retrying delivery(ies) plan the same payload: left on their retry "
                       "schedule")
        if self.skipped:
            out.append(f"{len(self.skipped)} retrying delivery(ies) skipped (they keep their old payload):")
            out.extend(f"  {did}: {why}" for did, why in self.skipped)
        return out


def _retrying_skip(row: Delivery) -> str | None:
    from runner.ingest.plan_rows import TYPE as PLAN_TYPE
    if row.connector_type == PLAN_TYPE:
        return "a plan row: it plans with the current files at its next attempt"
    if row.target_ref:
        return (f"the target already holds document {row.target_ref} for it; changing the payload now "
                "would not change that document")
    if not row.event_id:
        return "no stored event to plan from"
    return None


def replan_retrying(app, *, flow: str | None = None, connections: list[str] | None = None,
                    actor: str | None = None) -> RetryingReplan:
    """Re-plan the rows still retrying (of ``flow``, of these ``connections``) whose payload the
    current files change; make them due now with a fresh budget, keeping their idempotency keys."""
    report = RetryingReplan()
    for row in app.store.find_deliveries(state=State.RETRYING, flow=flow or None, connections=connections or None):
        why = _retrying_skip(row)
        if why is None:
            try:
                values, _ = replan(app, row)
            except DlqError as exc:
                why = str(exc).replace("\n", " ")
        if why is not None:
            report.skipped.append((row.id, why))
            continue
        if jsonio.loads(values["payload"]) == row.payload:
            report.unchanged.append(row.id)
        elif _requeue(app, row, values):
            report.replanned.append(row.id)
            app.store.audit("dlq.replan", str(row.id), f"flow={row.flow} route={row.route} "
                            f"key={row.idempotency_key} retrying, payload changed", actor=actor)
        else:
            report.skipped.append((row.id, "taken by a worker meanwhile: it is being sent with the old payload"))
    return report


def discard(app, delivery_id: int, reason: str, *, actor: str | None = None) -> None:
    reason = (reason or "").strip()
    if not reason:
        raise DlqError("--reason: say why this delivery is discarded (it is kept in the audit log)")
    row = get_dead(app.store, delivery_id)
    if not app.store.discard(delivery_id):
        raise DlqError(f"delivery {delivery_id} left the dead-letter queue meanwhile")
    app.store.audit("dlq.discard", str(delivery_id),
                    f"flow={row.flow} route={row.route} key={row.idempotency_key} "
                    f"error={(row.last_error or '')[:200]} reason={reason}", actor=actor)
