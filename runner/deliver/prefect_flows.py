"""Prefect flows: thin decorators over plain functions in ``delivery``.

Two run structures for the delivery loop (``settings.delivery_runs``): a flow
run per batch (``per_batch``), or a long-lived flow run per worker lane with a
task run per batch (``long_lived``, rotated every ``SESSION_BATCHES`` batches or
``SESSION_SECONDS``). Per-operation state lives in the store either way.
Importing this module imports Prefect: the CLI does it only in commands that
run flows.

What the UI shows is what happened: a run (the batch's task run, in the
long-lived structure) is named after what it carries
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
import time
import uuid
from collections import defaultdict
from typing import Any, Awaitable, Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import AsyncClientContext, FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from runner.apps import app_for
from runner.deliver.delivery import BatchReport, claimed_rows, deliver_group
from runner.deliver.limits import call_size, target_limits
from runner.store.model import Delivery

ARTIFACT_KEY = "ledgerflow-delivery"
DEAD_LETTERS = "Dead letters"          # the name of the Failed state of a run that dead-lettered operations


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_RESULTS: dict[str, dict] = {}         # flow run id -> what the run did, for the caller in this process
_app = app_for


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

def _chunks(rows: list[Delivery], size: int) -> list[list[Delivery]]:
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def _alert_failed_run(flow_, run, state) -> None:
    """Prefect hook: a failed or crashed delivery/scheduled run becomes a Slack alert
    (a run failed for its dead letters has had its dead-letter alert already)."""
    if state.name in (DEAD_LETTERS, "Exceptions"):     # alerted already (dead letters; the reconciliation's summary)
        return
    try:
        from runner.deliver.alerts import alert_flow_run_failed
        params = getattr(run, "parameters", None) or {}
        app = _app(params.get("project_file"))
        alert_flow_run_failed(app, flow_name=flow_.name, run_id=str(run.id), run_name=run.name,
                              message=str(getattr(state, "message", "") or state.type.value),
                              flow_file=params.get("flow_file"))
    except Exception:  # noqa: BLE001 - an alert must never hide the failure itself
        logging.getLogger("ledgerflow.alerts").exception("could not send the failed-run alert")


def batch_label(rows: list[Delivery]) -> str:
    """What a batch carries, for its run's name: ``qbo · 30 ops`` (connections joined by +)."""
    conns = sorted({r.connection for r in rows})
    return f"{'+'.join(conns) or 'nothing due'} · {len(rows)} ops"


def run_name(label: str, report: BatchReport) -> str:
    """The run's name once it is done: the label, and what did not go through."""
    return counted_name(label, len(report.dead), len(report.retried), len(report.superseded))


def counted_name(label: str, dead: int, retried: int, superseded: int) -> str:
    parts = [label]
    for n, what in ((dead, "dead"), (retried, "to retry"), (superseded, "taken over")):
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


def _deliver_call(project_file: str | None, connection: str, rows: list[Delivery], worker: str,
                  run_id: str | None) -> BatchReport:
    app = _app(project_file)
    with target_limits(app, connection, len(rows)):
        return deliver_group(app, connection, rows, worker=worker, flow_run_id=run_id)


async def _deliver_rows(project_file: str | None, rows: list[Delivery], worker: str, run_id: str | None) -> BatchReport:
    """One connector call per connection chunk, the calls in threads at once."""
    app = _app(project_file)
    groups: dict[str, list[Delivery]] = defaultdict(list)
    for r in rows:
        groups[r.connection].append(r)
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
    report, summary = await _deliver_recorded(project_file, rows, worker, run_id)
    name = run_name(label if claimed_by else batch_label(rows), report)
    if run_id and name != label:
        await get_client().update_flow_run(flow_run.id, name=name)
    if run_id:
        _RESULTS[run_id] = _result(rows, report)
    return _final_state(report, summary)


async def _deliver_recorded(project_file: str | None, rows: list[Delivery], worker: str,
                            run_id: str | None) -> tuple[BatchReport, str]:
    """Deliver a batch inside a flow or task run: the artifact (on that run), the summary in its
    logs, the dead-letter alert; the report and its summary."""
    report = await _deliver_rows(project_file, rows, worker, run_id)
    summary = (f"{len(rows)} operations: {len(report.sent)} delivered, {len(report.retried)} to retry, "
               f"{len(report.dead)} dead-lettered" + (f", {len(report.superseded)} taken over by another worker"
                                                      if report.superseded else ""))
    if rows:
        await acreate_table_artifact(table=operation_rows(report), key=ARTIFACT_KEY, description=summary)
        get_run_logger().info(summary)
    if report.dead:
        from runner.deliver.alerts import alert_dead_letters
        alert_dead_letters(_app(project_file), report.dead, run_id=run_id)
    return report, summary


def _result(rows: list[Delivery], report: BatchReport) -> dict:
    return {"claimed": len(rows), "sent": [r["id"] for r in report.sent],
            "retried": [r["id"] for r in report.retried], "dead": [r["id"] for r in report.dead],
            "superseded": [r["id"] for r in report.superseded]}


def _final_state(report: BatchReport, summary: str):
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


# ---- the long-lived structure: a flow run per lane session, a task run per batch -------------

PER_BATCH = "per_batch"
LONG_LIVED = "long_lived"
RUN_STRUCTURES = (PER_BATCH, LONG_LIVED)
SESSION_BATCHES = 500                  # a session's flow run ends after this many batches,
SESSION_SECONDS = 900.0                # or after this long; the next batch opens a new one

_INBOXES: dict[str, asyncio.Queue] = {}   # session key -> its batches waiting for a task run


@task(name="ledgerflow-deliver-batch", task_run_name="{label}", persist_result=False, cache_policy=NO_CACHE,
      log_prints=False)
async def deliver_batch_task(project_file: str | None, delivery_ids: list[int], claimed_by: str,
                             label: str) -> Any:
    """One batch as a task run of the lane's session: named after what it carries, its artifact
    and log lines on it, Failed ("Dead letters") when any operation was dead-lettered."""
    ctx = TaskRunContext.get()
    rows = claimed_rows(_app(project_file).store, claimed_by, delivery_ids)
    report, summary = await _deliver_recorded(project_file, rows, claimed_by, str(ctx.task_run.flow_run_id))
    ctx.task_run.name = run_name(label, report)      # the final state's event carries the name to the API
    _RESULTS[str(ctx.task_run.id)] = _result(rows, report)
    return _final_state(report, summary)


@flow(name="ledgerflow-delivery-session", flow_run_name="{label}", log_prints=False, persist_result=False,
      on_failure=[_alert_failed_run], on_crashed=[_alert_failed_run])
async def delivery_session_flow(project_file: str | None = None, session: str = "",
                                label: str = "delivery session"):
    """A lane's batches, each a task run, until the lane rotates or stops the session. Ends
    Failed ("Dead letters") when any batch dead-lettered operations, Failed when a batch failed;
    renamed after all it carried (``ledger_api · 12 batches · 1200 ops · 2 dead``)."""
    inbox = _INBOXES[session]
    tally = SessionTally()
    while (job := await inbox.get()) is not None:
        params, done = job
        try:
            result = await _task_result(await deliver_batch_task(
                project_file=project_file, delivery_ids=params["delivery_ids"], claimed_by=params["claimed_by"],
                label=params["label"], return_state=True))
        except Exception as exc:  # noqa: BLE001 - the lane releases the batch and retries it
            tally.failed += 1
            done.set_exception(exc)
            continue
        tally.add(params["connections"], result)
        done.set_result(result)
    if flow_run.id and tally.batches:
        await get_client().update_flow_run(flow_run.id, name=tally.name())
    return tally.state()


async def _task_result(state) -> dict:
    result = _RESULTS.pop(str(state.state_details.task_run_id), None)
    if result is None:
        await state.aresult()          # the task failed before it finished: raise its error
        raise RuntimeError(f"delivery task run ended {state.name} without a result")
    return result


class SessionTally:
    """What a session's batches did, for its flow run's name and final state."""

    def __init__(self) -> None:
        self.connections: set[str] = set()
        self.batches = self.ops = self.dead = self.retried = self.superseded = self.failed = 0

    def add(self, connections: list[str], result: dict) -> None:
        self.connections.update(connections)
        self.batches += 1
        self.ops += result["claimed"]
        self.dead += len(result["dead"])
        self.retried += len(result["retried"])
        self.superseded += len(result["superseded"])

    def name(self) -> str:
        batches = f"{self.batches} batch" + ("es" if self.batches != 1 else "")
        label = f"{'+'.join(sorted(self.connections)) or 'nothing due'} · {batches} · {self.ops} ops"
        return counted_name(label, self.dead, self.retried, self.superseded)

    def state(self):
        summary = (f"{self.batches} batches, {self.ops} operations: {self.dead} dead-lettered, "
                   f"{self.retried} to retry" + (f", {self.failed} batches failed" if self.failed else ""))
        if self.dead:
            return Failed(name=DEAD_LETTERS, message=summary)
        if self.failed:
            return Failed(message=summary)
        return Completed(message=summary)


class LaneSession:
    """A lane's long-lived delivery flow run, on the worker's PrefectRuntime loop: each batch a
    task run of it. Rotated after ``max_batches`` batches or ``max_seconds``, so runs stay small;
    ``finish`` ends it with its honest state, ``abandon`` cancels it (Prefect marks it Crashed)."""

    def __init__(self, project_file: str | None, lane_id: str, max_batches: int = SESSION_BATCHES,
                 max_seconds: float = SESSION_SECONDS) -> None:
        self.project_file, self.lane_id = project_file, lane_id
        self.max_batches, self.max_seconds = max_batches, max_seconds
        self._flow: asyncio.Future | None = None
        self._key = ""
        self._batches = 0
        self._opened = 0.0

    async def deliver(self, rows: list[Delivery]) -> dict:
        """Deliver claimed rows as the next task run of the session (opening or rotating it)."""
        if self._flow is not None and (self._flow.done() or self._batches >= self.max_batches
                                       or time.monotonic() - self._opened >= self.max_seconds):
            await self.finish()
        if self._flow is None:
            self._open()
        self._batches += 1
        done = asyncio.get_running_loop().create_future()
        params = dict(delivery_ids=[r.id for r in rows], claimed_by=self.lane_id, label=batch_label(rows),
                      connections=sorted({r.connection for r in rows}))
        await _INBOXES[self._key].put((params, done))
        await asyncio.wait({done, self._flow}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():             # the session ended (or never started) before the batch ran
            state, self._flow = self._flow, None
            raise RuntimeError(f"the delivery session ended before the batch ran: {_outcome(state)}")
        return done.result()

    def _open(self) -> None:
        self._key = f"{self.lane_id}#{uuid.uuid4().hex[:8]}"
        _INBOXES[self._key] = asyncio.Queue()
        self._batches, self._opened = 0, time.monotonic()
        self._flow = asyncio.ensure_future(delivery_session_flow(
            project_file=self.project_file, session=self._key, label=f"{self.lane_id} · delivery session",
            return_state=True))

    async def finish(self) -> Any:
        """End the session's flow run after its batches; its final state (None when none was open)."""
        flow_, self._flow = self._flow, None
        if flow_ is None:
            return None
        if not flow_.done():
            await _INBOXES[self._key].put(None)
        try:
            return await flow_
        finally:
            _INBOXES.pop(self._key, None)

    async def abandon(self) -> None:
        """The worker is going down on an error: cancel the session (Prefect records it Crashed)."""
        flow_, self._flow = self._flow, None
        if flow_ is not None and not flow_.done():
            flow_.cancel()
            await asyncio.gather(flow_, return_exceptions=True)
        _INBOXES.pop(self._key, None)


def _outcome(fut: asyncio.Future) -> str:
    if fut.cancelled():
        return "cancelled"
    exc = fut.exception()
    return f"{type(exc).__name__}: {exc}" if exc else f"its flow run ended {fut.result().name}"
