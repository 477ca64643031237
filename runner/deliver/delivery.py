"""Delivering claimed operations: connector I/O, then state in the store.

Per-operation state lives in the store, not in Prefect: this module is plain
functions, and the Prefect flows in ``prefect_flows`` are thin wrappers.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from connectors.base import ErrorKind, Item, Outcome, TargetError
from runner.core.secrets import SecretError
from runner.outcomes import THROTTLE_DEFAULT_WAIT, decide  # noqa: F401 - re-exported
from runner.store.model import Delivery

log = logging.getLogger("ledgerflow.delivery")



@dataclass
class BatchReport:
    sent: list[dict] = field(default_factory=list)
    retried: list[dict] = field(default_factory=list)
    dead: list[dict] = field(default_factory=list)
    superseded: list[dict] = field(default_factory=list)   # lease lapsed: another worker decides these

    def merge(self, other: "BatchReport") -> None:
        self.sent += other.sent
        self.retried += other.retried
        self.dead += other.dead
        self.superseded += other.superseded

    def rows(self) -> list[tuple[str, dict]]:
        """(outcome, row) for every operation, in delivery id order."""
        out = [(outcome, r) for outcome, rows in (("delivered", self.sent), ("retrying", self.retried),
                                                  ("dead", self.dead), ("taken over", self.superseded))
               for r in rows]
        return sorted(out, key=lambda o: o[1]["id"])

    def counts(self) -> dict[tuple[str, str], Counter]:
        out: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for state, rows in (("delivered", self.sent), ("retried", self.retried), ("dead", self.dead)):
            for r in rows:
                out[(r["flow"], r["connection"])][state] += 1
        return out


def claimed_rows(store, worker: str, ids: list[int]) -> list[Delivery]:
    """The rows among ``ids`` that ``worker`` holds a live claim on."""
    return store.claimed(worker, ids)


def deliver_rows(app, rows: list[Delivery], *, worker: str, flow_run_id: str | None = None) -> BatchReport:
    """Deliver claimed rows, one connector call per connection, and record every outcome."""
    by_conn: dict[str, list[Delivery]] = defaultdict(list)
    for r in rows:
        by_conn[r.connection].append(r)
    report = BatchReport()
    for connection, group in by_conn.items():
        report.merge(deliver_group(app, connection, group, worker=worker, flow_run_id=flow_run_id))
    return report


def deliver_group(app, connection: str, group: list[Delivery], *, worker: str,
                  flow_run_id: str | None = None) -> BatchReport:
    items = [Item(r.id, r.idempotency_key, r.action, r.payload, r.attempts, r.target_ref, r.created_at)
             for r in group]
    try:
        outcomes = _connector(app, connection).deliver(items)
    except TargetError as exc:
        outcomes = [Outcome.failed(i, exc) for i in items]
    except SecretError as exc:   # a missing credential: nothing to retry until someone fixes it
        outcomes = [Outcome.failed(i, TargetError(str(exc), ErrorKind.AUTH)) for i in items]
    except Exception as exc:  # noqa: BLE001 - a connector bug must not lose the batch
        log.exception("connector %s failed on a batch of %d", connection, len(items))
        outcomes = [Outcome.failed(i, TargetError(f"{type(exc).__name__}: {exc}")) for i in items]
    by_id = {o.delivery_id: o for o in outcomes}
    now = time.time()
    results = [decide(r, by_id.get(r.id) or Outcome.failed(Item(r.id, "", "", {}),
                                                             TargetError("connector returned no outcome")), now)
               for r in group]
    decided = app.store.finish(results, worker=worker, flow_run_id=flow_run_id)
    report = BatchReport()
    for r, res in zip(group, results):
        bucket = {"sent": report.sent, "retrying": report.retried, "dead": report.dead}[res["state"]]
        if res["id"] not in decided:
            bucket = report.superseded
            log.warning("delivery %s: this worker's lease lapsed and another worker took it over; "
                        "this attempt's outcome (%s) was recorded, its state left to the holder",
                        r.id, res["state"])
        bucket.append({**r, **res})
    for d in report.dead:
        log.warning("dead-letter: delivery %s (%s/%s -> %s): %s", d["id"], d["flow"], d["route"],
                    d["connection"], d.get("error"))
    log.info("%s: %d operations, %d delivered, %d to retry, %d dead", connection, len(group), len(report.sent),
             len(report.retried), len(report.dead))
    return report


def _connector(app: Any, connection: str) -> Any:
    """The connection's connector; plan rows (``(plan)``) are run by runner/deliver/replan.py's PlanConnector."""
    from runner.ingest.plan_rows import CONNECTION
    if connection == CONNECTION:
        from runner.deliver.replan import PlanConnector
        return PlanConnector(app)
    return app.connector(connection)
