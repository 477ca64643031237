"""The continuous delivery loop: claim due deliveries in batches and deliver each
batch in its own Prefect flow run, or (``settings.delivery_runs: long_lived``)
as a task run of its lane's long-lived flow run (planning pending events is the
dispatcher's, runner/ingest/dispatch.py, a service of its own beside this loop).

Claims are leases in the store (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so
any number of loops, in ``ledgerflow serve`` or ``ledgerflow worker``
processes, share the work without sending anything twice. A live loop renews
the leases of the batches in hand (a heartbeat thread), so a slow target never
has its batch taken over; a loop that dies or stalls has its claims taken over
when the lease runs out. Each lane (thread) claims under its own worker id.
Pull-based connector types (the QuickBooks Web Connector) are never claimed here.

All lanes run their flow runs on one event loop with one Prefect API client
(``prefect_flows.PrefectRuntime``). When the queue is deep a lane doubles its
batch (up to ``max_batch``), so Prefect's per-run cost is spread over more
operations. A batch that fails outside the connectors (the Prefect API answers
503, say) gives its claims back at once and the lane retries with backoff.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from dataclasses import dataclass

from runner.app import App
from runner.store.model import Delivery

log = logging.getLogger("ledgerflow.worker")

# settings.delivery_runs when unset. bench/bench_delivery.py runs both: a task run per batch (long_lived)
# cost about half a flow run's CPU with batches of 100, the same with deep queues; per_batch stays the
# default until tests/test_faults.py's killed-worker test passes with long_lived (it timed out once)
DEFAULT_RUNS = "per_batch"


@dataclass
class LoopSettings:
    batch_size: int = 100
    poll_interval: float = 0.5     # seconds to sleep when nothing is due
    lease: float = 300.0           # seconds a claim holds unless renewed; a dead worker's claims free up after it
    alert_flush_every: float = 10.0
    concurrency: int = 2           # lanes: batches in flight at once (a flow run each)
    max_batch: int = 0             # a deep queue grows batches up to this (0: 10 x batch_size)
    backoff_max: float = 30.0      # seconds between retries of batches that keep failing
    give_up_after: int = 6         # with until_idle: consecutive failed batches before the loop stops
    runs: str | None = None        # per_batch | long_lived (None: settings.delivery_runs, else DEFAULT_RUNS)
    session_batches: int = 0       # long_lived: batches per session flow run before it rotates (0: the default)
    session_seconds: float = 0.0   # long_lived: seconds before a session flow run rotates (0: the default)

    @property
    def batch_cap(self) -> int:
        return max(self.batch_size, self.max_batch or 10 * self.batch_size)

    @property
    def renew_every(self) -> float:
        return max(0.1, min(self.lease / 3, 30.0))


def push_types() -> list[str]:
    """Connector types the delivery loop sends to, plan rows included (runner/deliver/replan.py)."""
    from connectors import registry
    from runner.ingest.plan_rows import TYPE as PLAN
    return [t for t in registry.known_types() if not registry.is_pull(t)] + [PLAN]


class DeliveryLoop:
    """start()/stop() service for ``ledgerflow serve``; ``run()`` for ``ledgerflow worker``."""

    def __init__(self, app: App, settings: LoopSettings | None = None, worker: str | None = None):
        """Delivery only: planning is the dispatcher service's (runner/ingest/dispatch.py)."""
        from runner.apps import register_app
        from runner.deliver.prefect_flows import attach_run_logs, worker_id
        self.app = app
        self.settings = settings or LoopSettings(batch_size=int(app.project.settings.get("batch_size", 100)))
        self.worker = worker or worker_id()
        self.project_file = register_app(app)
        self.runs = self.settings.runs or app.project.settings.get("delivery_runs") or DEFAULT_RUNS
        self._sessions: dict[int, object] = {}           # lane -> its LaneSession (long_lived)
        attach_run_logs()
        self._context = contextvars.copy_context()      # the creator's Prefect settings, for the runtime
        self._runtime = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = 0.0
        self._count_lock = threading.Lock()
        self._in_hand: dict[str, list[int]] = {}         # lane id -> the ids of its batch in flight
        self.batches = 0
        self.delivered = 0
        self.dead = 0
        self.last_error: str | None = None
        self.gave_up = False

    def lane_id(self, lane: int) -> str:
        """Each lane claims under its own id: ``host:pid/lane-1``."""
        return f"{self.worker}/lane-{lane}"

    # ---- one step ------------------------------------------------------------

    def claim(self, lane: int = 0, limit: int | None = None) -> list[int]:
        return [r.id for r in self._claim(lane, limit)]

    def _claim(self, lane: int, limit: int | None) -> list[Delivery]:
        return self.app.store.claim(self.lane_id(lane), limit=limit or self.settings.batch_size,
                                    lease=self.settings.lease, connector_types=push_types())

    def deliver(self, rows: list[Delivery], lane: int = 0) -> dict:
        from runner.deliver.prefect_flows import batch_label, run_batch
        ids = [r.id for r in rows]
        params = dict(project_file=self.project_file, delivery_ids=ids, limit=len(ids),
                      lease_seconds=self.settings.lease, claimed_by=self.lane_id(lane), label=batch_label(rows))
        if self._runtime and self.runs == "long_lived":
            session = self._session(lane)
            result = self._runtime.run(lambda: session.deliver(rows))
        else:
            result = self._runtime.run(lambda: run_batch(**params)) if self._runtime else \
                self._context.run(_run_once, params)
        with self._count_lock:
            self.batches += 1
            self.delivered += len(result["sent"])
            self.dead += len(result["dead"])
        return result

    def _session(self, lane: int):
        from runner.deliver.prefect_flows import SESSION_BATCHES, SESSION_SECONDS, LaneSession
        if lane not in self._sessions:
            self._sessions[lane] = LaneSession(self.project_file, self.lane_id(lane),
                                               self.settings.session_batches or SESSION_BATCHES,
                                               self.settings.session_seconds or SESSION_SECONDS)
        return self._sessions[lane]

    def _close_sessions(self, crashed: bool) -> None:
        """End the lanes' session flow runs: finished with their state, or, when the loop is going
        down on an error, cancelled (Prefect records them Crashed). A new run opens a new session."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            try:
                self._runtime.run(session.abandon if crashed else session.finish, timeout=120)
            except Exception:  # noqa: BLE001 - its batches are recorded in the store already
                log.exception("could not end the delivery session of %s", session.lane_id)

    def tick(self, lead: bool = True, lane: int = 0, limit: int | None = None) -> int:
        """Claim one batch and deliver it; the number of deliveries claimed. Only the
        lead lane runs the housekeeping (grouped alerts)."""
        if lead:
            self.housekeeping()
        rows = self._claim(lane, limit)
        if rows:
            lane_id = self.lane_id(lane)
            self._in_hand[lane_id] = [r.id for r in rows]
            try:
                self.deliver(rows, lane)
            except BaseException:
                self.release([r.id for r in rows], lane)
                raise
            finally:
                self._in_hand.pop(lane_id, None)
        return len(rows)

    def housekeeping(self) -> None:
        """Between batches, on the lead lane: flushing grouped alerts. (Planning pending events
        is not done here: the dispatcher is a service of its own, runner/ingest/dispatch.py.)"""
        now = time.time()
        if now - self._last_flush >= self.settings.alert_flush_every:
            self._last_flush = now
            try:
                from runner.deliver.alerts import flush_grouped
                flush_grouped(self.app)
            except Exception:  # noqa: BLE001
                log.exception("flushing grouped alerts failed")

    def release(self, ids: list[int], lane: int = 0) -> bool:
        """Give back at once the claims a failed batch still holds; False when that failed."""
        try:
            self.app.store.release(self.lane_id(lane), ids, time.time() + self.settings.poll_interval)
            return True
        except Exception:  # noqa: BLE001 - the lease will release them anyway
            log.exception("could not release claims %s; they free up when their lease ends (%.0fs)",
                          ids[:10], self.settings.lease)
            return False

    def renew(self) -> None:
        """Heartbeat: extend the leases of every batch in hand."""
        for lane_id, ids in list(self._in_hand.items()):
            try:
                self.app.store.renew(lane_id, ids, self.settings.lease)
            except Exception:  # noqa: BLE001 - try again at the next beat; the lease is 3 beats long
                log.exception("could not renew the leases of %s", lane_id)

    def remaining(self) -> int:
        """Deliveries this loop would claim now or at its next poll (a released batch is due then)."""
        return self.app.store.count_due(connector_types=push_types(),
                                        now=time.time() + self.settings.poll_interval)

    def request_stop(self) -> None:
        """Finish the batch in hand, then stop (SIGTERM)."""
        self._stop.set()

    # ---- loops -----------------------------------------------------------------

    def run(self, *, until_idle: bool = False, max_batches: int | None = None) -> None:
        """Loop until stopped (or, with ``until_idle``, until nothing is due or batches keep
        failing), with ``settings.concurrency`` lanes, each claiming and delivering its own batches."""
        from runner.deliver.prefect_flows import PrefectRuntime
        lanes = max(1, self.settings.concurrency)
        self.gave_up = False
        self._runtime = self._context.run(PrefectRuntime)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(done,), name="ledgerflow-lease-renewal", daemon=True)
        beat.start()
        threads = [threading.Thread(target=self._lane, args=(until_idle, max_batches, i),
                                    name=f"ledgerflow-delivery-{i}", daemon=True) for i in range(lanes)]
        crashed = True
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            crashed = False
        finally:
            done.set()
            beat.join()
            self._close_sessions(crashed)
            self._runtime.close()
            self._runtime = None

    def _heartbeat(self, done: threading.Event) -> None:
        while not done.wait(self.settings.renew_every):
            self.renew()

    def _lane(self, until_idle: bool, max_batches: int | None, lane: int) -> None:
        size, failures = self.settings.batch_size, 0
        while not self._stop.is_set():
            try:
                claimed = self.tick(lane == 0, lane, size)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - nothing is lost: the claims went back at once
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                wait = min(self.settings.poll_interval * 2 ** failures, self.settings.backoff_max)
                log.exception("delivery batch failed (%d in a row); its claims were released at once, "
                              "retrying in %.1fs", failures, wait)
                if until_idle and failures >= self.settings.give_up_after:
                    self.gave_up = True
                    return
                self._stop.wait(wait)
                continue
            if max_batches is not None and self.batches >= max_batches:
                return
            size = min(size * 2, self.settings.batch_cap) if claimed >= size else self.settings.batch_size
            if not claimed:
                if until_idle:
                    return
                self._stop.wait(self.settings.poll_interval)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="ledgerflow-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def _run_once(params: dict) -> dict:
    """A batch outside ``run()`` (tests, one-off callers): its own event loop."""
    import asyncio

    from runner.deliver.prefect_flows import run_batch
    return asyncio.run(run_batch(**params))


def background(app: App) -> DeliveryLoop:
    """serve_hooks.BACKGROUND entry: the delivery loop inside ``ledgerflow serve``."""
    from runner.deliver.limits import ensure_limits
    try:
        ensure_limits(app)
    except Exception:  # noqa: BLE001 - limits are an optimisation of politeness, not of correctness
        log.exception("could not create the connections' Prefect concurrency limits")
    return DeliveryLoop(app)
