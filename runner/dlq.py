"""The dead-letter queue: look, re-plan and replay, or discard with a reason.

Replay is the repair path: fix the mapping (or the flow), then replay. The
stored inbox event is planned again with the *current* flow and mapping
files; the delivery keeps its idempotency key, so a document the target
already created (a lost response) is found, not created twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import and_, update

from . import jsonio
from .errors import LedgerflowError
from .store.tables import deliveries as d


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


def dead(store, *, flow: str | None = None, limit: int | None = None) -> list[dict]:
    conds = [d.c.state == "dead"]
    if flow:
        conds.append(d.c.flow == flow)
    return store.deliveries_where(*conds, limit=limit)


def get_dead(store, delivery_id: int) -> dict:
    row = store.delivery(delivery_id)
    if row is None:
        raise DlqError(f"no delivery {delivery_id} (see `ledgerflow dlq list`)")
    if row["state"] != "dead":
        raise DlqError(f"delivery {delivery_id} is {row['state']}, not in the dead-letter queue")
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


def _current_flow(app, row: dict):
    flows = app.flows(reload=True)
    if row["flow"] in flows:
        return flows[row["flow"]]
    if row.get("flow_file"):
        try:
            return app.flow(row["flow_file"])
        except LedgerflowError:
            pass
    raise DlqError(f"delivery {row['id']}: flow {row['flow']!r} no longer exists under {app.flow_dir()}; "
                   f"discard it with `ledgerflow dlq discard {row['id']} --reason ...`")


def replan(app, row: dict) -> tuple[dict, bool]:
    """The new delivery values for a dead row, from its stored event and the current flow."""
    event_row = app.store.get_event(row["event_id"]) if row.get("event_id") else None
    if event_row is None:
        return {}, False
    if row.get("connector_type") == "plan":      # a flow that could not plan: the delivery loop re-plans it
        return {"payload": jsonio.dumps(row["payload"])}, True
    flow = _current_flow(app, row)
    event = jsonio.loads(event_row["payload"])
    try:
        ops = app.plan_event(event, flow)
    except LedgerflowError as exc:
        raise DlqError(f"delivery {row['id']}: the current flow still cannot plan event {row['event_id']}:\n{exc}") \
            from None
    match = [op for op in ops if op.route == row["route"]]
    if not match:
        why = "filters the event out" if not ops else f"routes it to {', '.join(o.route for o in ops)} only"
        raise DlqError(f"delivery {row['id']}: the current flow {flow.name} {why}, not to route {row['route']!r}; "
                       f"nothing to replay (discard it with a reason instead)")
    op = match[0]
    return {"payload": jsonio.dumps(op.payload), "action": op.action, "connection": op.connection,
            "connector_type": op.connector_type, "max_attempts": op.max_attempts or row["max_attempts"],
            "retry_policy": op.retry_policy or row.get("retry_policy"), "flow_file": op.flow_file}, True


def replay(app, delivery_id: int, *, actor: str | None = None) -> Replayed:
    """Re-plan a dead delivery and make it due now, keeping its idempotency key."""
    row = get_dead(app.store, delivery_id)
    values, replanned = replan(app, row)
    changed = replanned and jsonio.loads(values["payload"]) != row["payload"]
    now = time.time()
    with app.store.tx(immediate=True) as c:
        # attempts keep counting (a target that answers a repeated request id with its original fault,
        # as QuickBooks Online does, must see a new attempt), and the flow's budget starts afresh
        budget = int(values.pop("max_attempts", None) or row["max_attempts"])
        res = c.execute(update(d).where(and_(d.c.id == delivery_id, d.c.state == "dead")).values(
            **values, state="pending", max_attempts=d.c.attempts + budget, next_attempt_at=now, last_error=None,
            error_kind=None, claimed_by=None, lease_until=None, updated_at=now))
        if res.rowcount != 1:
            raise DlqError(f"delivery {delivery_id} left the dead-letter queue meanwhile (replayed by someone else?)")
    app.store.audit("dlq.replay", str(delivery_id),
                    f"flow={row['flow']} route={row['route']} key={row['idempotency_key']} "
                    f"replanned={replanned} changed={changed}", actor=actor)
    return Replayed(delivery_id, replanned, changed)


def discard(app, delivery_id: int, reason: str, *, actor: str | None = None) -> None:
    reason = (reason or "").strip()
    if not reason:
        raise DlqError("--reason: say why this delivery is discarded (it is kept in the audit log)")
    row = get_dead(app.store, delivery_id)
    now = time.time()
    with app.store.tx(immediate=True) as c:
        res = c.execute(update(d).where(and_(d.c.id == delivery_id, d.c.state == "dead"))
                        .values(state="discarded", updated_at=now))
        if res.rowcount != 1:
            raise DlqError(f"delivery {delivery_id} left the dead-letter queue meanwhile")
    app.store.audit("dlq.discard", str(delivery_id),
                    f"flow={row['flow']} route={row['route']} key={row['idempotency_key']} "
                    f"error={(row.get('last_error') or '')[:200]} reason={reason}", actor=actor)
