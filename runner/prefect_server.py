"""The embedded Prefect server: the UI and schedules without setting anything up.

When ``PREFECT_API_URL`` is unset, ``ledgerflow serve`` starts ``prefect server
start`` as a subprocess with its home (``PREFECT_HOME``) and SQLite database
under the project's state folder, waits until it answers, points this process
at it and prints the UI address (http://127.0.0.1:4200 by default; the port
comes from ``LEDGERFLOW_PREFECT_PORT`` or ``serve.prefect_port``). A server
already answering there (another ``serve``) is used as it is. With
``PREFECT_API_URL`` set, that server is used and nothing is started.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

log = logging.getLogger("ledgerflow.prefect")

DEFAULT_PORT = 4200


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile/settings, if any."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings
    url = get_current_settings().api.url
    return str(url) if url else None


def use_api(api_url: str) -> None:
    """Point this process (every thread, every later flow run) at ``api_url``."""
    os.environ["PREFECT_API_URL"] = api_url
    os.environ.setdefault("PREFECT_UI_URL", api_url.rsplit("/api", 1)[0])
    if "prefect" in sys.modules:
        from prefect.context import refresh_global_settings_context
        refresh_global_settings_context()


class EmbeddedPrefect:
    """start()/stop() service; ``ui_url`` is what to open in a browser."""

    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 startup_timeout: float = 90.0):
        self.home = Path(state_dir) / "prefect"
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        configured = configured_api_url()
        self.api_url = configured or f"http://{host}:{port}/api"
        self.external = bool(configured)

    @property
    def ui_url(self) -> str:
        return os.environ.get("PREFECT_UI_URL") or self.api_url.rsplit("/api", 1)[0]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.home),
                   PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_API_URL=self.api_url,
                   PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"))
        return env

    def start(self) -> None:
        if self.external:
            log.info("Prefect: using PREFECT_API_URL=%s", self.api_url)
            print(f"Prefect UI: {self.ui_url}", flush=True)
            return
        if not healthy(self.api_url):
            self.home.mkdir(parents=True, exist_ok=True)
            logfile = open(self.home / "server.log", "ab")
            self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=logfile,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            logfile.close()
            deadline = time.time() + self.startup_timeout
            while not healthy(self.api_url):
                if self.process.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"the embedded Prefect server did not start on {self.api_url}; "
                                       f"see {self.home / 'server.log'}")
                time.sleep(0.25)
        use_api(self.api_url)
        print(f"Prefect UI: {self.ui_url}  (deployments and schedules: {self.ui_url}/deployments)", flush=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


def port_for(app) -> int:
    env = os.environ.get("LEDGERFLOW_PREFECT_PORT")
    if env:
        return int(env)
    return int((app.project.raw.get("serve") or {}).get("prefect_port", DEFAULT_PORT))


def background(app) -> EmbeddedPrefect:
    """serve_hooks.BACKGROUND entry (listed first, so later services find the API)."""
    return EmbeddedPrefect(app.project.state_dir, port=port_for(app))


def adopt_running(app) -> bool:
    """For ``ledgerflow worker``: without PREFECT_API_URL, use the embedded server if one answers."""
    if configured_api_url():
        return True
    url = f"http://127.0.0.1:{port_for(app)}/api"
    if healthy(url):
        use_api(url)
        return True
    return False
