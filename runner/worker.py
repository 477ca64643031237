"""The continuous delivery loop: claim due deliveries in batches, and deliver
each batch in its own Prefect flow run. (Pending inbox events are planned into
deliveries by the dispatcher, a service of its own: runner/dispatch.py.)

Claims are leases in the store (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so
any number of loops, in ``ledgerflow serve`` or ``ledgerflow worker``
processes, share the work without sending anything twice; a loop that dies
mid-batch has its claims taken over when the lease runs out. Pull-based
connector types (the QuickBooks Web Connector) are never claimed here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from .app import App

log = logging.getLogger("ledgerflow.worker")


@dataclass
class LoopSettings:
    batch_size: int = 100
    poll_interval: float = 0.5     # seconds to sleep when nothing is due
    lease: float = 300.0           # seconds a claim holds before another worker may take it
    alert_flush_every: float = 10.0
    concurrency: int = 2           # batches in flight at once (a flow run each): Prefect's per-run
                                   # latency is waiting on its API, so batches overlap well


def push_types() -> list[str]:
    """Connector types the delivery loop sends to, plan rows included (runner/replan.py)."""
    from connectors import registry

    from .replan import TYPE as PLAN
    return [t for t in registry.known_types() if not registry.is_pull(t)] + [PLAN]


class DeliveryLoop:
    """start()/stop() service for ``ledgerflow serve``; ``run()`` for ``ledgerflow worker``."""

    def __init__(self, app: App, settings: LoopSettings | None = None, worker: str | None = None, *,
                 dispatch: bool = True):
        from .prefect_flows import register_app, worker_id
        self.app = app
        self.dispatch = dispatch
        self.settings = settings or LoopSettings(batch_size=int(app.project.settings.get("batch_size", 100)))
        self.worker = worker or worker_id()
        self.project_file = register_app(app)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = 0.0
        self._count_lock = threading.Lock()
        self.batches = 0
        self.delivered = 0

    # ---- one step ------------------------------------------------------------

    def claim(self) -> list[int]:
        rows = self.app.store.claim(self.worker, limit=self.settings.batch_size, lease=self.settings.lease,
                                    connector_types=push_types())
        return [r["id"] for r in rows]

    def deliver(self, ids: list[int]) -> dict:
        from .prefect_flows import deliver_batch
        result = deliver_batch(project_file=self.project_file, delivery_ids=ids, limit=len(ids),
                               lease_seconds=self.settings.lease, claimed_by=self.worker)
        with self._count_lock:
            self.batches += 1
            self.delivered += len(result["sent"])
        return result

    def tick(self, lead: bool = True) -> int:
        """Claim one batch and deliver it; the number of deliveries claimed.
        Only the lead lane flushes grouped alerts. (Planning is the dispatcher's, a service
        of its own: runner/dispatch.py.)"""
        now = time.time()
        if lead and now - self._last_flush >= self.settings.alert_flush_every:
            self._last_flush = now
            try:
                from .alerts import flush_grouped
                flush_grouped(self.app)
            except Exception:  # noqa: BLE001
                log.exception("flushing grouped alerts failed")
        ids = self.claim()
        if ids:
            try:
                self.deliver(ids)
            except BaseException:
                self.release(ids)
                raise
        return len(ids)

    def release(self, ids: list[int]) -> None:
        """Give back claims a failed batch still holds (instead of waiting for the lease)."""
        from sqlalchemy import and_, update
        from .store.tables import deliveries as d
        try:
            with self.app.store.tx() as c:
                c.execute(update(d).where(and_(d.c.id.in_(ids), d.c.claimed_by == self.worker,
                                               d.c.state == "sending"))
                          .values(state="retrying", claimed_by=None, lease_until=None,
                                  next_attempt_at=time.time() + self.settings.poll_interval, updated_at=time.time()))
        except Exception:  # noqa: BLE001 - the lease will release them anyway
            log.exception("could not release claims %s", ids[:10])

    def request_stop(self) -> None:
        """Finish the batch in hand, then stop (SIGTERM)."""
        self._stop.set()

    # ---- loops -----------------------------------------------------------------

    def run(self, *, until_idle: bool = False, max_batches: int | None = None) -> None:
        """Loop until stopped (or, with ``until_idle``, until nothing is due), with
        ``settings.concurrency`` lanes, each claiming and delivering its own batches."""
        lanes = max(1, self.settings.concurrency)
        if lanes == 1:
            return self._lane(until_idle, max_batches, True)
        threads = [threading.Thread(target=self._lane, args=(until_idle, max_batches, i == 0),
                                    name=f"ledgerflow-delivery-{i}", daemon=True) for i in range(lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _lane(self, until_idle: bool, max_batches: int | None, lead: bool) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.tick(lead)
            except Exception:  # noqa: BLE001 - a failed batch is retried after its lease
                log.exception("delivery batch failed; its claims are released when the lease ends")
                claimed = 0
                self._stop.wait(self.settings.poll_interval)
            if max_batches is not None and self.batches >= max_batches:
                return
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


def background(app: App) -> DeliveryLoop:
    """serve_hooks.BACKGROUND entry: the delivery loop inside ``ledgerflow serve`` (the
    dispatcher, runner.dispatch:background, is a service of its own beside it)."""
    from .limits import ensure_limits
    try:
        ensure_limits(app)
    except Exception:  # noqa: BLE001 - limits are an optimisation of politeness, not of correctness
        log.exception("could not create the connections' Prefect concurrency limits")
    return DeliveryLoop(app)
