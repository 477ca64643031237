"""Prefect flows: thin decorators over plain functions in ``delivery``.

A flow run per batch; per-operation state lives in the store. Importing this
module imports Prefect: the CLI does it only in commands that run flows.

What the UI shows is what happened: a run is named after what it carries
(``qbo · 30 ops · 2 dead``), ends *Failed* ("Dead letters") when any of its
operations was dead-lettered, holds ledgerflow's own log lines for the batch,
and its artifact lists every operation (event, action, amount, document,
outcome, error; no customer data, errors are scrubbed when decided).

The delivery flow is an ``async`` flow: Prefect's synchronous flow engine joins
its heartbeat thread on exit, which cost about a second per batch. A worker
runs its batches on one long-lived event loop with one Prefect API client
(``PrefectRuntime``): a new loop and client per batch (``asyncio.run``) was
half the loop's CPU. Connector calls run in threads (``asyncio.to_thread``) so
the lanes' batches overlap on that one loop. ``deliver_batch`` is the one-shot
synchronous entry point for commands (``run``, ``dlq replay``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import threading
from collections import defaultdict
from typing import Any, Awaitable, Callable

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.client.orchestration import get_client
from prefect.context import AsyncClientContext, FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from .app import App
from .delivery import BatchReport, claimed_rows, deliver_group
from .limits import call_size, target_limits

ARTIFACT_KEY = "ledgerflow-delivery"
DEAD_LETTERS = "Dead letters"          # the name of the Failed state of a run that dead-lettered operations


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_APPS: dict[str | None, App] = {}
_RESULTS: dict[str, dict] = {}         # flow run id -> what the run did, for the caller in this process


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


# ---- ledgerflow's log lines in the run's logs ------------------------------------------------

class RunLogHandler(APILogHandler):
    """Prefect's API log handler for ledgerflow's loggers: sends what is logged inside a
    flow or task run (the delivery code of the batch) to that run's logs, nothing else."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return
        super().emit(record)


def attach_run_logs() -> None:
    """Once per process: the ``ledgerflow`` loggers also log to the Prefect run they run in."""
    root = logging.getLogger("ledgerflow")
    if not any(isinstance(h, RunLogHandler) for h in root.handlers):
        root.addHandler(RunLogHandler())


# ---- one event loop and one API client per worker --------------------------------------------

class PrefectRuntime:
    """A long-lived event loop in a thread, with one Prefect API client, on which a worker
    runs all its flow runs. It runs in the context (Prefect settings) of its creator."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._client_ctx: AsyncClientContext | None = None
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(target=ctx.run, args=(self._loop.run_forever,),
                                        name="ledgerflow-prefect", daemon=True)
        self._thread.start()

    def run(self, make: Callable[[], Awaitable[Any]], timeout: float | None = None) -> Any:
        """Run ``make()`` on the loop, with the shared client, from any thread; its result."""
        return asyncio.run_coroutine_threadsafe(self._with_client(make), self._loop).result(timeout)

    async def _with_client(self, make: Callable[[], Awaitable[Any]]) -> Any:
        if self._client_ctx is None:
            client_ctx = AsyncClientContext()
            await client_ctx.client.__aenter__()
            self._client_ctx = client_ctx
        AsyncClientContext.__var__.set(self._client_ctx)      # this task's context only
        return await make()

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def _close() -> None:
            if self._client_ctx is not None:
                await self._client_ctx.client.__aexit__(None, None, None)
        try:
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(30)
        except Exception:  # noqa: BLE001 - closing a client must not hide why we stop
            logging.getLogger("ledgerflow.worker").debug("closing the Prefect client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


# ---- the flow ------------------------------------------------------------------------------

def _chunks(rows: list[dict], size: int) -> list[list[dict]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def _alert_failed_run(flow_, run, state) -> None:
    """Prefect hook: a failed or crashed delivery/scheduled run becomes a Slack alert
    (a run failed for its dead letters has had its dead-letter alert already)."""
    if state.name == DEAD_LETTERS:
        return
    try:
        from .alerts import alert_flow_run_failed
        params = getattr(run, "parameters", None) or {}
        app = _app(params.get("project_file"))
        alert_flow_run_failed(app, flow_name=flow_.name, run_id=str(run.id), run_name=run.name,
                              message=str(getattr(state, "message", "") or state.type.value),
                              flow_file=params.get("flow_file"))
    except Exception:  # noqa: BLE001 - an alert must never hide the failure itself
        logging.getLogger("ledgerflow.alerts").exception("could not send the failed-run alert")


def batch_label(rows: list[dict]) -> str:
    """What a batch carries, for its run's name: ``qbo · 30 ops`` (connections joined by +)."""
    conns = sorted({r["connection"] for r in rows})
    return f"{'+'.join(conns) or 'nothing due'} · {len(rows)} ops"


def run_name(label: str, report: BatchReport) -> str:
    """The run's name once it is done: the label, and what did not go through."""
    parts = [label]
    for n, what in ((len(report.dead), "dead"), (len(report.retried), "to retry"),
                    (len(report.superseded), "taken over")):
        if n:
            parts.append(f"{n} {what}")
    return " · ".join(parts)


_AMOUNT_KEYS = ("amount", "TotalAmt", "total_amount", "Amount", "total", "gross", "net")
_CURRENCY_KEYS = ("currency", "CurrencyRef", "currency_id", "currency_code")


def _first(payload: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(payload, dict):
        return None
    for k in keys:
        v = payload.get(k)
        if isinstance(v, dict):
            v = v.get("value")
        if v is not None and not isinstance(v, (dict, list)):
            return v
    return None


def operation_rows(report: BatchReport) -> list[dict]:
    """The artifact's table: one row per operation. Amount and currency are the payload's own
    top-level fields when it has them (no customer data: names, emails stay out)."""
    out = []
    for outcome, r in report.rows():
        amount = _first(r.get("payload"), _AMOUNT_KEYS)
        out.append({"event": r.get("event_id"), "flow": r["flow"], "target": r["connection"],
                    "operation": r["action"], "amount": None if amount is None else str(amount),
                    "currency": _first(r.get("payload"), _CURRENCY_KEYS), "document": r.get("target_ref"),
                    "outcome": outcome, "error": r.get("error") if outcome != "delivered" else None})
    return out


def _deliver_call(project_file: str | None, connection: str, rows: list[dict], worker: str,
                  run_id: str | None) -> BatchReport:
    app = _app(project_file)
    with target_limits(app, connection, len(rows)):
        return deliver_group(app, connection, rows, worker=worker, flow_run_id=run_id)


async def _deliver_rows(project_file: str | None, rows: list[dict], worker: str, run_id: str | None) -> BatchReport:
    """One connector call per connection chunk, the calls in threads at once."""
    app = _app(project_file)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["connection"]].append(r)
    calls = [(conn, chunk) for conn, grp in groups.items()
             for chunk in _chunks(grp, call_size(app.project.connections.get(conn, {})))]
    report = BatchReport()
    for part in await asyncio.gather(*(asyncio.to_thread(_deliver_call, project_file, conn, chunk, worker, run_id)
                                       for conn, chunk in calls)):
        report.merge(part)
    return report


@flow(name="ledgerflow-deliver", flow_run_name="{label}", log_prints=False, persist_result=False,
      on_failure=[_alert_failed_run], on_crashed=[_alert_failed_run])
async def deliver_batch_flow(project_file: str | None = None, delivery_ids: list[int] | None = None,
                             limit: int = 100, lease_seconds: float = 300.0, claimed_by: str | None = None,
                             label: str = "deliver due operations"):
    """Deliver one batch; leave an artifact listing its operations; end Failed ("Dead letters")
    when any was dead-lettered.

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
    report = await _deliver_rows(project_file, rows, worker, run_id)
    summary = (f"{len(rows)} operations: {len(report.sent)} delivered, {len(report.retried)} to retry, "
               f"{len(report.dead)} dead-lettered" + (f", {len(report.superseded)} taken over by another worker"
                                                      if report.superseded else ""))
    if rows:
        await acreate_table_artifact(table=operation_rows(report), key=ARTIFACT_KEY, description=summary)
        get_run_logger().info(summary)
    name = run_name(label if claimed_by else batch_label(rows), report)
    if run_id and name != label:
        await get_client().update_flow_run(flow_run.id, name=name)
    if report.dead:
        from .alerts import alert_dead_letters
        alert_dead_letters(app, report.dead, run_id=run_id)
    result = {"claimed": len(rows), "sent": [r["id"] for r in report.sent],
              "retried": [r["id"] for r in report.retried], "dead": [r["id"] for r in report.dead],
              "superseded": [r["id"] for r in report.superseded]}
    if run_id:
        _RESULTS[run_id] = result
    if report.dead:
        return Failed(name=DEAD_LETTERS, message=summary)
    return Completed(message=summary)


async def run_batch(**params: Any) -> dict:
    """Run one delivery flow run; what it did (raises when the run itself failed)."""
    state = await deliver_batch_flow(**params, return_state=True)
    result = _RESULTS.pop(str(state.state_details.flow_run_id), None)
    if result is None:
        await state.result()           # the run failed before it finished: raise its error
        raise RuntimeError(f"delivery flow run ended {state.name} without a result")
    return result


def deliver_batch(project_file: str | None = None, delivery_ids: list[int] | None = None,
                  limit: int = 100, lease_seconds: float = 300.0, claimed_by: str | None = None) -> dict:
    """Deliver one batch in its own Prefect flow run (see ``deliver_batch_flow``), one-shot."""
    attach_run_logs()
    return asyncio.run(run_batch(project_file=project_file, delivery_ids=delivery_ids, limit=limit,
                                 lease_seconds=lease_seconds, claimed_by=claimed_by))
