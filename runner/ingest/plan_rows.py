"""Plan rows: the delivery row a flow that could not plan an event keeps in the queue
(connection ``(plan)``, key ``plan:<flow>:<event id>``). The dispatcher writes them; the delivery
loop runs them (runner/deliver/replan.py's ``PlanConnector``)."""

from __future__ import annotations

from typing import Any

CONNECTION = "(plan)"
TYPE = "plan"
ROUTE = "(plan)"


def plan_key(flow: str, event_id: str) -> str:
    return f"plan:{flow}:{event_id}"


class PlanOperation:
    """The plan row for (flow, event) as an operation for ``Store.add_deliveries``."""

    def __init__(self, flow: Any, event_id: str, error: str):
        self.flow = flow.name
        self.flow_file = flow.file
        self.route = ROUTE
        self.connection = CONNECTION
        self.connector_type = TYPE
        self.action = "plan"
        self.idempotency_key = plan_key(flow.name, event_id)
        self.event_id = event_id
        self.payload = {"flow": flow.name, "event_id": event_id, "first_error": error}
        self.max_attempts = flow.retry.attempts
        self.retry_policy = flow.retry.as_json()
        self.posting = None


def transient(exc: BaseException) -> bool:
    return bool(getattr(exc, "transient", False))
