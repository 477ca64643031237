"""``ledgerflow run``: one event through one flow, for real, in a Prefect flow run."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runner.app import App
from runner.language.spec import Flow

if TYPE_CHECKING:
    from runner.store.model import Delivery


@dataclass
class RunResult:
    event_id: str
    rows: list[Delivery] = field(default_factory=list)
    new: list[int] = field(default_factory=list)
    filtered: bool = False

    @property
    def dead(self) -> list[Delivery]:
        return [r for r in self.rows if r.state == "dead"]

    def lines(self) -> list[str]:
        if self.filtered:
            return [f"{self.event_id}: filtered out by the flow; nothing to deliver"]
        out = []
        for r in self.rows:
            label = {"sent": "delivered" if r.id in self.new else "already delivered (nothing sent again)",
                     "retrying": "will retry", "dead": "dead-lettered", "pending": "pending",
                     "sending": "in flight"}.get(r.state, r.state)
            line = f"{r.route} -> {r.connection} ({r.action}) key={r.idempotency_key}: {label}"
            if r.target_ref:
                line += f" [{r.target_ref}]"
            if r.state in ("retrying", "dead") and r.last_error:
                line += f": {r.last_error}"
            out.append(line)
        return out


def run_event(app: App, flow: Flow, event: dict, raw: str, *, source: str = "cli",
              prefect_api: Callable[[], AbstractContextManager] = nullcontext) -> RunResult:
    """Plan ``event`` with ``flow`` and deliver what it plans in a Prefect flow run, inside
    ``prefect_api()`` (the caller's choice of Prefect API; entered only when there is something to
    deliver, so a filtered event starts no server)."""
    store = app.store
    store.add_event(event, raw, source)
    ops = app.plan_event(event, flow)
    result = RunResult(event["id"], filtered=not ops)
    ids = store.add_deliveries(ops) if ops else []
    store.mark_event(event["id"], "dispatched" if ops else "ignored", flows=flow.name)
    todo = [did for did, _ in ids if store.delivery(did).state in ("pending", "retrying")]
    if todo:
        from runner.deliver.prefect_flows import deliver_batch
        with prefect_api():
            deliver_batch(project_file=str(app.project.path), delivery_ids=todo, limit=len(todo))
    result.new = [did for did in todo if store.delivery(did).state == "sent"]
    result.rows = [store.delivery(did) for did, _ in ids]
    return result
