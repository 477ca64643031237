"""Run an ASGI app for real on a loopback port (uvicorn in a thread) for tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    def __init__(self, app: Any, port: int | None = None, **config: Any):
        self.port = port or free_port()
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                     lifespan="auto", **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerThread":
        self.thread.start()
        deadline = time.time() + 120          # a busy machine: never depend on a fast start
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        start_services = getattr(self.config.app, "start_services", None)
        if callable(start_services):             # as `ledgerflow serve` does once its port is open
            start_services()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def serve_app(app: Any, **config: Any) -> Iterator[ServerThread]:
    st = ServerThread(app, **config).start()
    try:
        yield st
    finally:
        st.stop()


def start_serve(port: int, env: dict[str, str], *, cwd: Path = ROOT, log: Path | None = None,
                timeout: float = 240.0, args: tuple[str, ...] = ("--no-background",)) -> subprocess.Popen:
    """``ledgerflow serve --no-background`` (receives webhooks only; ``args`` replaces that flag) in
    its own process, once it answers ``/healthz``; the project comes from ``env`` (LEDGERFLOW_PROJECT)
    or ``cwd``. A busy machine can be slow to start Python: the wait is generous, and a failure says why."""
    import httpx

    out = open(log, "wb") if log is not None else None
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "serve", *args, "--port", str(port),
                             "--log-level", "warning"], cwd=cwd, env=env, stdout=out,
                            stderr=subprocess.STDOUT if out else None)
    tail = (lambda: log.read_text(errors="replace")[-3000:]) if log is not None else (lambda: "")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ledgerflow serve exited with {proc.returncode} {tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.2)
        proc.kill()
        proc.wait(30)
        raise RuntimeError(f"ledgerflow serve did not answer /healthz within {timeout:.0f} s {tail()}")
    finally:
        if out is not None:
            out.close()         # the child keeps its own copy of the file

