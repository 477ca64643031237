"""Background services for ``ledgerflow serve``: a thread that runs a pass, then waits."""

from __future__ import annotations

import logging
import threading

from runner.core.errors import LedgerflowError

log = logging.getLogger("ledgerflow.services")


class PeriodicService:
    """``start()``/``stop()`` around a thread calling ``run_pass()`` every ``interval``
    seconds. ``run_pass`` returns True to go again at once (more work waiting);
    an exception is logged and the service carries on at the next interval."""

    name = "service"

    def __init__(self, interval: float):
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pass(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_pass():
                    continue
            except LedgerflowError as exc:   # a configuration problem: its message says what to fix
                log.error("%s pass failed: %s", self.name, exc)
            except Exception:  # noqa: BLE001 - keep the service alive
                log.exception("%s pass failed", self.name)
            self._stop.wait(self.interval)
