"""Several receiver processes on one port: ``ledgerflow serve --workers N``.

One Python process receives about as many webhooks per second as one core
allows (the signature check, the JSON parse and uvicorn's HTTP parsing are all
CPU work under one GIL). ``--workers N`` runs N receivers on the same port:

* the supervisor binds the port, then starts receivers 1..N-1 as child
  processes that inherit the listening socket (``serve --worker-fd``); the
  kernel hands each new connection to whichever process accepts it first, so
  no balancer sits in between;
* the supervisor is receiver 0 as well, and the only process that runs the
  background services (Prefect server, dispatcher, delivery loop, schedules)
  and the Web Connector's own listener: they run once, however many receivers;
* a receiver that exits is restarted; when the supervisor stops, it stops its
  receivers, and a receiver whose supervisor vanished (SIGKILL) stops by itself.

Nothing is received twice or lost: each process acknowledges an event only
after its own group commit, and the inbox's key is the Stripe event id, inserted
with ``ON CONFLICT DO NOTHING`` (``Store.add_events``), so the same event sent to
two processes at once is stored once and both answer 200.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from runner.operate.server.listeners import build_servers, serve_all

log = logging.getLogger("ledgerflow.serve")

RESTART_DELAY = 5.0      # seconds between restarts of a receiver that keeps exiting


def listen(host: str, port: int) -> socket.socket:
    """The listening socket every receiver shares (inheritable by the child processes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _spawn(index: int, workers: int, sock: socket.socket, log_level: str) -> subprocess.Popen:
    fd = sock.fileno()
    return subprocess.Popen([sys.executable, "-m", "runner.cli", "serve", "--worker-fd", str(fd),
                             "--worker-index", str(index), "--workers", str(workers), "--log-level", log_level],
                            pass_fds=(fd,))


class Receivers:
    """The child receivers of a supervisor: started, watched (restarted if they exit), stopped."""

    def __init__(self, workers: int, sock: socket.socket, log_level: str):
        self.workers, self.sock, self.log_level = workers, sock, log_level
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, float] = {}
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, name="receiver-watch", daemon=True)

    def start(self) -> "Receivers":
        for i in range(1, self.workers):
            self._start(i)
        self._watch.start()
        return self

    def _start(self, i: int) -> None:
        self.procs[i] = _spawn(i, self.workers, self.sock, self.log_level)
        self.started[i] = time.monotonic()
        log.info("receiver %d of %d started (pid %d)", i, self.workers, self.procs[i].pid)

    def _watch_loop(self) -> None:
        while not self._stopping.wait(1.0):
            for i, proc in list(self.procs.items()):
                if proc.poll() is None or self._stopping.is_set():
                    continue
                if time.monotonic() - self.started[i] < RESTART_DELAY:
                    continue            # wait a little before restarting one that exits at once
                log.error("receiver %d (pid %d) exited with %s; starting it again", i, proc.pid, proc.returncode)
                self._start(i)

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def supervise(app: Any, host: str, port: int, workers: int, *, background: bool, log_level: str) -> int:
    """Receiver 0 (with the background services) in this process, receivers 1..N-1 as children."""
    sock = listen(host, port)
    # uvicorn re-raises SIGTERM once it has shut down: end here, through the finally that stops the children
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    receivers = Receivers(workers, sock, log_level).start()
    try:
        servers = build_servers(app, host, port, background=background, log_level=log_level, worker=(0, workers))
        asyncio.run(serve_all(servers, sockets=[sock]))
    except KeyboardInterrupt:
        pass
    finally:
        receivers.stop()
        sock.close()
    return 0


def _exit_with_parent(parent: int) -> None:
    """A receiver whose supervisor is gone (killed) stops: nobody would restart or stop it."""
    while os.getppid() == parent:
        time.sleep(1.0)
    log.warning("the supervisor (pid %d) is gone; this receiver stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)


def serve_child(app: Any, host: str, port: int, fd: int, index: int, workers: int, *, log_level: str) -> int:
    """Receiver ``index``: webhooks on the inherited socket only; no background service, no other listener."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    sock = socket.socket(fileno=fd)
    servers = build_servers(app, host, port, background=False, log_level=log_level, worker=(index, workers),
                            own_listeners=False)
    try:
        asyncio.run(serve_all(servers, sockets=[sock]))
    except KeyboardInterrupt:
        pass
    return 0
