"""serve's background services, started after the port is open and watched while they run.

``ledgerflow serve`` answers webhooks from its first second: the services
(``serve_hooks.BACKGROUND``: the project's Prefect server, the dispatcher, the
catch-up, the delivery loop, the schedule runner) are started one by one in a
thread of their own once the listeners are up (``start()``), however long each
takes. Each one's state is in ``/healthz``: ``waiting``, ``starting``,
``running``, ``failed`` (with the reason) or ``stopped``. A service fails when
its ``start()`` raises, or later when it reports a ``problem()`` or its thread
(``_thread``) has died; a failure is logged, shown in ``/healthz`` and sent to
Slack, once. The services that need the Prefect API
(``serve_hooks.NEEDS_PREFECT``) are not started when it could not be had: they
fail with that reason instead of running flows without an API.

The flows are loaded here too, first thing in that thread (the receiver needs
only ``ledgerflow.yaml``, so a broken flow never keeps webhooks out of the
inbox). A flow that does not load is loud: every problem logged as
``file:line:col: message``, ``/healthz`` ``degraded`` with ``flows`` failed and
the first problem, and one Slack alert. The services that plan with the flows
(``serve_hooks.NEEDS_FLOWS``: the dispatcher, the schedules) wait, so no event
is failed because of a broken file; the others start. The configuration watcher
takes the fixed files without a restart, and the waiting services start then.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from runner.core.errors import LedgerflowError, SpecError
from runner.core.redact import scrub
from runner.operate import serve_hooks

log = logging.getLogger("ledgerflow.serve")

PREFECT = "runner.operate.prefect_server:background"


@dataclass
class ServiceState:
    state: str = "waiting"
    reason: str | None = None
    since: float = 0.0

    def as_dict(self) -> dict:
        out = {"state": self.state, "since": round(self.since, 3)}
        if self.reason:
            out["reason"] = self.reason
        return out


_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE)


def _reason(exc: BaseException) -> str:
    """The error's first line, without credentials in URLs or personal data (it goes to
    /healthz, the log and Slack)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = scrub(_CREDENTIALS.sub(r"\g<scheme>[redacted]@", text)) or ""
    if isinstance(exc, LedgerflowError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _problem(svc: Any) -> str | None:
    """Why a started service is no longer running, or None."""
    check = getattr(svc, "problem", None)
    if callable(check):
        found = check()
        if found:
            return found
    thread = getattr(svc, "_thread", None)
    if isinstance(thread, threading.Thread) and not thread.is_alive():
        return f"its thread {thread.name!r} stopped"
    return None


class Supervisor:
    """Starts ``refs`` in order in a thread (``start()``), watches them, stops them (``stop()``)."""

    def __init__(self, app: Any, refs: list[str], *, watch_every: float = 1.0):
        self.app = app
        self.refs = list(refs)
        self.watch_every = watch_every
        self.states = {ref: ServiceState(since=time.time()) for ref in self.refs}
        # the flows: loaded first when a service plans with them; None when none does (no key in /healthz)
        self.flows = ServiceState(since=time.time()) if serve_hooks.NEEDS_FLOWS & set(self.refs) else None
        self._held: list[str] = []                  # services waiting for the flows to be fixed
        self.running: list[tuple[str, Any]] = []
        self._starting: Any = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def health(self) -> dict[str, dict]:
        with self._lock:
            return {ref: st.as_dict() for ref, st in self.states.items()}

    def flows_health(self) -> dict | None:
        """The flows' state (waiting, loading, loaded, failed with the first problem), or None."""
        with self._lock:
            return self.flows.as_dict() if self.flows is not None else None

    def start(self) -> None:
        if self._thread is None and self.refs:
            self._thread = threading.Thread(target=self._run, name="ledgerflow-services", daemon=True)
            self._thread.start()

    def _set(self, ref: str, state: str, reason: str | None = None) -> None:
        with self._lock:
            self.states[ref] = ServiceState(state, reason, time.time())

    def _fail(self, ref: str, reason: str, *, starting: bool) -> None:
        self._set(ref, "failed", reason)
        if starting:
            log.error("background service %s did not start: %s; webhooks are still received", ref, reason)
        else:
            log.error("background service %s failed: %s; webhooks are still received", ref, reason)
        try:
            from runner.deliver.alerts import alert_service_failed
            alert_service_failed(self.app, ref, reason)
        except Exception:  # noqa: BLE001 - the alert must never hide the failure itself
            log.exception("could not send the service-failed alert")

    def _run(self) -> None:
        if self.flows is not None:
            self._load_flows()
        for ref in self.refs:
            if self._stop.is_set():
                return
            if ref in serve_hooks.NEEDS_FLOWS and self.flows is not None and self.flows.state == "failed":
                self._held.append(ref)
                self._set(ref, "waiting", "waits for the flows to load (see flows)")
                continue
            self._start_checked(ref)
        while not self._stop.wait(self.watch_every):
            self._watch()

    def _start_checked(self, ref: str) -> None:
        prefect = self.states.get(PREFECT)
        if ref in serve_hooks.NEEDS_PREFECT and prefect is not None and prefect.state == "failed":
            self._fail(ref, f"not started: it needs the Prefect API ({prefect.reason})", starting=True)
            return
        self._start_one(ref)

    # ---- the flows --------------------------------------------------------------------

    def _set_flows(self, state: str, reason: str | None = None) -> None:
        with self._lock:
            self.flows = ServiceState(state, reason, time.time())

    def _load_flows(self) -> None:
        self._set_flows("loading")
        try:
            flows = self.app.flows()
        except SpecError as exc:
            self._flows_failed([str(p) for p in exc.problems])
            return
        except LedgerflowError as exc:              # two flows with one name, say
            self._flows_failed([str(exc)])
            return
        self._set_flows("loaded")
        log.info("%d flow(s) loaded", len(flows))

    def _flows_failed(self, problems: list[str]) -> None:
        waiting = [ref for ref in self.refs if ref in serve_hooks.NEEDS_FLOWS]
        self._set_flows("failed", f"{len(problems)} problem(s), the first: {scrub(problems[0])}")
        log.error("the flows have %d problem(s); webhooks are still received into the inbox, and %s wait until "
                  "they are fixed (check with `ledgerflow validate`; the next valid save is taken without a "
                  "restart):\n%s", len(problems), ", ".join(waiting), "\n".join(problems))
        try:
            from runner.deliver.alerts import alert_flows_broken
            alert_flows_broken(self.app, problems, waiting)
        except Exception:  # noqa: BLE001 - the alert must never hide the failure itself
            log.exception("could not send the broken-flows alert")

    def _start_held(self) -> None:
        """The flows loaded after a fix (hot reload): start the services that waited for them."""
        if not self._held or self.app.config.flows is None:
            return
        self._set_flows("loaded")
        log.info("the flows load now; starting %s", ", ".join(self._held))
        while self._held and not self._stop.is_set():
            self._start_checked(self._held.pop(0))

    # ---- the services -------------------------------------------------------------------

    def _start_one(self, ref: str) -> None:
        self._set(ref, "starting")
        try:
            svc = serve_hooks.load(ref)(self.app)
            with self._lock:
                self._starting = svc
            svc.start()
        except Exception as exc:  # noqa: BLE001 - the front door stays open without this service
            if not self._stop.is_set():
                log.debug("start of %s failed", ref, exc_info=True)
                self._fail(ref, _reason(exc), starting=True)
            return
        finally:
            with self._lock:
                self._starting = None
        with self._lock:
            self.running.append((ref, svc))
        self._set(ref, "running")
        log.info("started %s", ref)

    def _watch(self) -> None:
        self._start_held()
        with self._lock:
            running = list(self.running)
        for ref, svc in running:
            if self.states[ref].state != "running":
                continue
            try:
                problem = _problem(svc)
            except Exception as exc:  # noqa: BLE001
                problem = _reason(exc)
            if problem and not self._stop.is_set():
                self._fail(ref, problem, starting=False)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            starting = self._starting
        if starting is not None:                    # still in start(): let it give up
            _stop_quietly("(starting)", starting)
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            running = list(self.running)
            self.running.clear()
        for ref, svc in reversed(running):
            _stop_quietly(ref, svc)
            self._set(ref, "stopped")


def _stop_quietly(ref: str, svc: Any) -> None:
    try:
        svc.stop()
    except Exception:  # noqa: BLE001
        log.exception("stopping %s failed", ref)
