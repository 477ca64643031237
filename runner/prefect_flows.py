"""Prefect flows: thin decorators over plain functions in ``delivery``.

A flow run per batch, a task per connector call batch; per-operation state
lives in the store. Importing this module imports Prefect: the CLI does it
only in commands that run flows.

The delivery flow is an ``async`` flow whose body is plain synchronous code:
Prefect's synchronous flow engine joins its heartbeat thread on exit, and that
thread sleeps in one-second steps, which made every batch cost about a second
on top of its work; the async engine does not wait for it (measured here:
1.14 s versus 0.19 s for an empty flow run). ``deliver_batch`` is the
synchronous entry point every caller uses.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import defaultdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from .app import App
from .delivery import BatchReport, claimed_rows, deliver_group
from .limits import call_size, target_limits

ARTIFACT_KEY = "ledgerflow-delivery"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_APPS: dict[str | None, App] = {}


def register_app(app: App) -> str | None:
    """Let flows in this process use an already loaded App (the worker's)."""
    key = str(app.project.path) if app.project.path else None
    _APPS[key] = app
    return key


def _app(project_file: str | None) -> App:
    if project_file not in _APPS:
        from .spec import load_project
        _APPS[project_file] = App(load_project(project_file))
    return _APPS[project_file]


@task(name="deliver-connection-batch", retries=0, cache_policy=NO_CACHE, log_prints=False)
def deliver_connection_task(project_file: str | None, connection: str, rows: Any, worker: str,
                            run_id: str | None) -> BatchReport:
    """``rows`` comes quoted: Prefect need not walk a hundred payloads to resolve parameters."""
    rows = rows.unquote() if isinstance(rows, quote) else rows
    app = _app(project_file)
    with target_limits(app, connection, len(rows)):
        return deliver_group(app, connection, rows, worker=worker, flow_run_id=run_id)


def _chunks(rows: list[dict], size: int) -> list[list[dict]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def _alert_failed_run(flow_, run, state) -> None:
    """Prefect hook: a failed or crashed delivery/scheduled run becomes a Slack alert."""
    try:
        from .alerts import alert_flow_run_failed
        params = getattr(run, "parameters", None) or {}
        app = _app(params.get("project_file"))
        alert_flow_run_failed(app, flow_name=flow_.name, run_id=str(run.id), run_name=run.name,
                              message=str(getattr(state, "message", "") or state.type.value),
                              flow_file=params.get("flow_file"))
    except Exception:  # noqa: BLE001 - an alert must never hide the failure itself
        import logging
        logging.getLogger("ledgerflow.alerts").exception("could not send the failed-run alert")


def deliver_batch(project_file: str | None = None, delivery_ids: list[int] | None = None,
                  limit: int = 100, lease_seconds: float = 300.0, claimed_by: str | None = None) -> dict:
    """Deliver one batch in its own Prefect flow run (see ``deliver_batch_flow``)."""
    return asyncio.run(deliver_batch_flow(project_file=project_file, delivery_ids=delivery_ids, limit=limit,
                                          lease_seconds=lease_seconds, claimed_by=claimed_by))


@flow(name="ledgerflow-deliver", log_prints=False, persist_result=False,
      on_failure=[_alert_failed_run], on_crashed=[_alert_failed_run])
async def deliver_batch_flow(project_file: str | None = None, delivery_ids: list[int] | None = None,
                             limit: int = 100, lease_seconds: float = 300.0, claimed_by: str | None = None) -> dict:
    """Deliver one batch and leave an artifact (delivered, retried, dead by flow and target).

    With ``claimed_by`` the ids were claimed by that worker already; otherwise
    the run claims due deliveries (or the given ids) itself.
    """
    app = _app(project_file)
    if claimed_by:
        worker = claimed_by
        rows = claimed_rows(app.store, worker, delivery_ids or [])
    else:
        worker = worker_id()
        rows = app.store.claim(worker, limit=limit, lease=lease_seconds, ids=delivery_ids)
    run_id = str(flow_run.id) if flow_run.id else None
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["connection"]].append(r)
    calls = []
    for conn, grp in groups.items():
        size = call_size(app.project.connections.get(conn, {}))
        calls.extend((conn, chunk) for chunk in _chunks(grp, max(1, size)))
    report = BatchReport()
    if len(calls) == 1:
        report.merge(deliver_connection_task(project_file, calls[0][0], quote(calls[0][1]), worker, run_id))
    else:
        futures = [deliver_connection_task.submit(project_file, conn, quote(chunk), worker, run_id) for conn, chunk in calls]
        for fut in futures:
            report.merge(fut.result())
    if rows:
        table = [{"flow": f, "target": c, "delivered": n["delivered"], "retried": n["retried"], "dead": n["dead"]}
                 for (f, c), n in sorted(report.counts().items())]
        await acreate_table_artifact(table=table, key=ARTIFACT_KEY,
                              description=f"{len(rows)} deliveries: {len(report.sent)} delivered, "
                                          f"{len(report.retried)} to retry, {len(report.dead)} dead-lettered")
        get_run_logger().info("batch of %d: %d delivered, %d to retry, %d dead", len(rows), len(report.sent),
                              len(report.retried), len(report.dead))
    if report.dead:
        from .alerts import alert_dead_letters
        alert_dead_letters(app, report.dead, run_id=run_id)
    return {"claimed": len(rows), "sent": [r["id"] for r in report.sent],
            "retried": [r["id"] for r in report.retried], "dead": [r["id"] for r in report.dead]}
