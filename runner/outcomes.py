"""The next state of a delivery after one attempt: sent, retrying when (the flow's backoff, a
throttle's wait, the target's Retry-After) or dead. Pure; used by the delivery loop
(runner/deliver/delivery.py) and by the Web Connector's queue (runner/qbwc_queue.py), so both engines
decide alike."""

from __future__ import annotations

import random
from typing import Callable

from connectors.base import ErrorKind, Outcome, TargetError
from runner.core.redact import personal_values, scrub
from runner.language.spec import RetryPolicy

THROTTLE_DEFAULT_WAIT = 60.0


def decide(row: dict, outcome: Outcome, now: float, rand: Callable[[], float] = random.random) -> dict:
    """The next state of a delivery after one attempt (pure)."""
    if outcome.ok:
        return {"id": row["id"], "state": "sent", "target_ref": outcome.target_ref}
    err = outcome.error or TargetError("unknown failure")
    message = scrub(str(err), personal_values(row.get("payload"))) or err.kind.value
    if err.kind == ErrorKind.THROTTLED:
        wait = err.retry_after if err.retry_after is not None else THROTTLE_DEFAULT_WAIT
        return {"id": row["id"], "state": "retrying", "error": message, "kind": err.kind.value,
                "next_attempt_at": now + wait, "counted": False, "target_ref": outcome.target_ref}
    if err.kind in (ErrorKind.PERMANENT, ErrorKind.AUTH):
        return {"id": row["id"], "state": "dead", "error": message, "kind": err.kind.value,
                "target_ref": outcome.target_ref}
    attempt = row["attempts"] + 1
    if attempt >= row["max_attempts"]:
        return {"id": row["id"], "state": "dead", "error": f"{message} (gave up after {attempt} attempts)",
                "kind": err.kind.value, "target_ref": outcome.target_ref}
    policy = RetryPolicy.from_json(row.get("retry_policy"))
    delay = policy.delay(attempt, rand())
    if err.retry_after is not None:
        delay = max(delay, err.retry_after)
    return {"id": row["id"], "state": "retrying", "error": message, "kind": err.kind.value,
            "next_attempt_at": now + delay, "target_ref": outcome.target_ref}
