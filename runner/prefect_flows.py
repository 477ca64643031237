"""Prefect flows: thin decorators over plain functions in ``delivery``.

A flow run per batch, a task per connection group; per-operation state lives
in the store. Importing this module imports Prefect: the CLI does it only in
commands that run flows.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from .app import App
from .delivery import BatchReport, deliver_group


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@task(name="deliver-connection-batch", retries=0, cache_policy=NO_CACHE)
def deliver_connection_task(project_file: str | None, connection: str, rows: list[dict], worker: str,
                            run_id: str | None) -> dict:
    app = _app(project_file)
    report = deliver_group(app, connection, rows, worker=worker, flow_run_id=run_id)
    return {"sent": report.sent, "retried": report.retried, "dead": report.dead}


_APPS: dict[str | None, App] = {}


def _app(project_file: str | None) -> App:
    if project_file not in _APPS:
        from .spec import load_project
        _APPS[project_file] = App(load_project(project_file))
    return _APPS[project_file]


@flow(name="ledgerflow-deliver", log_prints=False, persist_result=False)
def deliver_batch(project_file: str | None = None, delivery_ids: list[int] | None = None,
                  limit: int = 100, lease_seconds: float = 300.0) -> dict:
    """Claim due deliveries (or the given ones), deliver them, leave an artifact."""
    app = _app(project_file)
    worker = worker_id()
    rows = app.store.claim(worker, limit=limit, lease=lease_seconds, ids=delivery_ids)
    run_id = str(flow_run.id) if flow_run.id else None
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["connection"]].append(r)
    futures = [deliver_connection_task.submit(project_file, conn, grp, worker, run_id)
               for conn, grp in groups.items()]
    report = BatchReport()
    for fut in futures:
        res = fut.result()
        report.merge(BatchReport(res["sent"], res["retried"], res["dead"]))
    if rows:
        table = [{"flow": f, "target": c, "delivered": n["delivered"], "retried": n["retried"], "dead": n["dead"]}
                 for (f, c), n in sorted(report.counts().items())]
        create_table_artifact(table=table, key="ledgerflow-delivery",
                              description=f"{len(rows)} deliveries: {len(report.sent)} delivered, "
                                          f"{len(report.retried)} to retry, {len(report.dead)} dead-lettered")
        get_run_logger().info("batch of %d: %d delivered, %d to retry, %d dead", len(rows), len(report.sent),
                              len(report.retried), len(report.dead))
    return {"claimed": len(rows), "sent": [r["id"] for r in report.sent],
            "retried": [r["id"] for r in report.retried], "dead": [r["id"] for r in report.dead]}
