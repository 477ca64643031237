"""One Prefect API per project: which server every command uses, and the project's own.

Every command that runs a Prefect flow (``run``, ``dlq replay``, ``worker``,
``deploy``, ``serve``, the demo, the tests) resolves the API before any flow
runs, in this order:

1. ``PREFECT_API_URL`` (the environment or the active Prefect profile): used as
   it is; nothing is started.
2. The project's own server, if one is running: it is recorded in
   ``<state_dir>/prefect/server.json`` (url, pid, project) and adopted only when
   verified: the recorded pid is alive and the server at that url reports this
   project's ``PREFECT_HOME`` (``/api/admin/settings``). Whatever else answers
   on the port is never adopted.
3. Else the command starts the project's server: ``prefect server start`` with
   its home and SQLite database under ``<state_dir>/prefect`` (PostgreSQL with
   ``LEDGERFLOW_PREFECT_DATABASE_URL``, for several workers), analytics off,
   on ``LEDGERFLOW_PREFECT_PORT`` / ``serve.prefect_port`` (default 4200). When
   the default port is taken by something that is not ours, the next free port
   is used (and recorded); a port set explicitly that is taken is an error. The
   wait is ``LEDGERFLOW_PREFECT_STARTUP_TIMEOUT`` / ``serve.prefect_startup_timeout``
   seconds (default 600); missing it is a one-line error saying what to do.

Every process using the project's server holds a shared lock on
``prefect/users.lock``; when it is done, the last one out stops the server and
removes the record (``LEDGERFLOW_PREFECT_KEEP=1`` keeps a server it started
running). So a short command that had to start the server leaves none behind,
and one that finds ``ledgerflow serve``'s server uses it without stopping it.
Prefect's own temporary ("ephemeral") server is switched off for every command
(``PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=false``): a flow that ran without an API
would fail instead of starting a server on a random port.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from runner.core.errors import LedgerflowError

log = logging.getLogger("ledgerflow.prefect")

DEFAULT_PORT = 4200
DEFAULT_STARTUP_LIMIT = 600.0
PORT_ENV = "LEDGERFLOW_PREFECT_PORT"
LIMIT_ENV = "LEDGERFLOW_PREFECT_STARTUP_TIMEOUT"
DATABASE_ENV = "LEDGERFLOW_PREFECT_DATABASE_URL"   # the project's server on PostgreSQL (several workers)
KEEP_ENV = "LEDGERFLOW_PREFECT_KEEP"


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


def forbid_ephemeral() -> None:
    """No Prefect temporary server on a random port in this process (or its children)."""
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    _refresh()


def use_api(api_url: str) -> None:
    """Point this process (every thread, every later flow run) at ``api_url``."""
    os.environ["PREFECT_API_URL"] = api_url
    os.environ.setdefault("PREFECT_UI_URL", api_url.rsplit("/api", 1)[0])
    _refresh()


def _refresh() -> None:
    if "prefect" in sys.modules:
        from prefect.context import refresh_global_settings_context
        refresh_global_settings_context()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:                                   # a zombie (exited, not yet reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def server_home(api_url: str, timeout: float = 2.0) -> str | None:
    """The PREFECT_HOME the server at ``api_url`` runs with (None: not a Prefect server we can ask)."""
    try:
        r = httpx.get(f"{api_url.rstrip('/')}/admin/settings", timeout=timeout)
        return str(r.json().get("home")) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


@dataclass
class ServerSettings:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    port_fixed: bool = False          # set by the user: taken means an error, not another port
    startup_limit: float = DEFAULT_STARTUP_LIMIT
    database_url: str | None = None   # None: SQLite under ``home``; else Prefect's own database URL

    @property
    def home(self) -> Path:
        return Path(self.state_dir) / "prefect"


def _number(value, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = -1.0
    if out <= 0:
        raise LedgerflowError(f"{where}: expected a positive number of seconds, got {value!r}")
    return out


def settings_for(app) -> ServerSettings:
    """The project's server settings; ``app`` is an App (or a loaded project)."""
    project = getattr(app, "project", app)
    serve = project.raw.get("serve") or {}
    port_cfg = os.environ.get(PORT_ENV) or serve.get("prefect_port")
    try:
        port = int(port_cfg) if port_cfg else DEFAULT_PORT
    except ValueError:
        raise LedgerflowError(f"{PORT_ENV}: expected a port number, got {port_cfg!r}") from None
    if os.environ.get(LIMIT_ENV):
        limit = _number(os.environ[LIMIT_ENV], LIMIT_ENV)
    elif serve.get("prefect_startup_timeout") is not None:
        limit = _number(serve["prefect_startup_timeout"], f"{project.file}: serve.prefect_startup_timeout")
    else:
        limit = DEFAULT_STARTUP_LIMIT
    return ServerSettings(project.state_dir, port=port, port_fixed=bool(port_cfg), startup_limit=limit,
                          database_url=database_url())


def database_url() -> str | None:
    """``LEDGERFLOW_PREFECT_DATABASE_URL`` (an environment variable only: it may carry a password), checked
    to be one Prefect's server takes: ``postgresql+asyncpg://...`` or ``sqlite+aiosqlite:///...``."""
    url = os.environ.get(DATABASE_ENV, "").strip()
    if not url:
        return None
    if not url.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite:///")):
        raise LedgerflowError(f"{DATABASE_ENV}: expected postgresql+asyncpg://USER@HOST:PORT/DATABASE (or "
                              f"sqlite+aiosqlite:///PATH), got a URL starting {url.split('://')[0]!r}://")
    return url


class ProjectServer:
    """The project's ``prefect server start`` under ``<state_dir>/prefect``: its record, its locks."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.home = settings.home
        self.record_path = self.home / "server.json"
        self.cancelled = threading.Event()
        self.process: subprocess.Popen | None = None
        self.starting: subprocess.Popen | None = None    # spawned, not yet answering (serve may stop meanwhile)

    # ---- the record -------------------------------------------------------------------

    def recorded(self) -> dict | None:
        try:
            return json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None

    def verified(self, rec: dict | None) -> bool:
        """The recorded server is alive and is this project's (its PREFECT_HOME is ours)."""
        return bool(rec) and _pid_alive(rec.get("pid")) and server_home(rec["url"]) == str(self.home)

    def _write_record(self, url: str, pid: int) -> None:
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "pid": pid, "home": str(self.home),
                                   "project": str(self.settings.state_dir), "started_at": time.time()}))
        tmp.replace(self.record_path)

    # ---- locks ------------------------------------------------------------------------

    @contextmanager
    def resolving(self) -> Iterator[None]:
        """One process at a time decides (adopt, start or stop) for this project."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "resolve.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def join(self):
        """A shared lock on users.lock, held while this process uses the server."""
        fh = open(self.home / "users.lock", "a")
        fcntl.flock(fh, fcntl.LOCK_SH)
        return fh

    def last_user(self) -> bool:
        with open(self.home / "users.lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(fh, fcntl.LOCK_UN)
            return True

    # ---- start and stop ---------------------------------------------------------------

    def choose_port(self) -> int:
        s = self.settings
        if _port_free(s.host, s.port):
            return s.port
        if s.port_fixed:
            raise LedgerflowError(f"port {s.port} (LEDGERFLOW_PREFECT_PORT / serve.prefect_port) is in use by another "
                                  "program, not this project's Prefect server: choose a free port, or set "
                                  "PREFECT_API_URL to use that server")
        for port in range(s.port + 1, s.port + 100):
            if _port_free(s.host, port):
                log.warning("port %d is in use by another program (not this project's Prefect server): the "
                            "project's Prefect server uses port %d", s.port, port)
                return port
        raise LedgerflowError(f"no free port from {s.port} to {s.port + 99} for the project's Prefect server: "
                              "set LEDGERFLOW_PREFECT_PORT")

    def environment(self, api_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(self.home),
                   PREFECT_SERVER_DATABASE_CONNECTION_URL=(self.settings.database_url
                                                           or f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_API_URL=api_url,
                   PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"))
        return env

    def spawn(self) -> str:
        """Start the server, wait until it answers (or the limit), record it; its API url. A port
        taken between the check and the server's bind (not one the user set) means another try."""
        deadline = time.monotonic() + self.settings.startup_limit
        problem, url = "start-up was cancelled", ""
        for _ in range(3):
            if self.cancelled.is_set():
                break
            port = self.choose_port()
            url = f"http://{self.settings.host}:{port}/api"
            proc = self.starting = self._popen(port, url)
            problem = self._wait(proc, url, deadline)
            if problem is None:
                self._write_record(url, proc.pid)
                self.process, self.starting = proc, None
                return url
            _terminate(proc.pid)
            self.starting = None
            if self.cancelled.is_set():
                raise LedgerflowError(f"the project's Prefect server on {url} was stopped while starting "
                                      "(ledgerflow is shutting down)")
            if proc.returncode is None or self.settings.port_fixed or _port_free(self.settings.host, port):
                break
        raise LedgerflowError(f"the project's Prefect server on {url} {problem} (log: {self.home / 'server.log'}); "
                              f"raise {LIMIT_ENV} or serve.prefect_startup_timeout, or set PREFECT_API_URL to a "
                              "running Prefect server")

    def _popen(self, port: int, url: str) -> subprocess.Popen:
        with open(self.home / "server.log", "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", self.settings.host,
                                     "--port", str(port)], env=self.environment(url), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait(self, proc: subprocess.Popen, url: str, deadline: float) -> str | None:
        """None once the server answers as this project's; else what went wrong."""
        while not (healthy(url) and server_home(url) == str(self.home)):
            if self.cancelled.is_set():
                return "start-up was cancelled"
            if proc.poll() is not None:
                return f"exited with code {proc.returncode} before answering"
            if time.monotonic() > deadline:
                return f"did not answer within {self.settings.startup_limit:g} s"
            self.cancelled.wait(0.25)
        return None

    def stop_recorded(self) -> None:
        rec = self.recorded()
        if rec and _pid_alive(rec.get("pid")) and _is_prefect_server(int(rec["pid"])):
            _terminate(int(rec["pid"]))
        self.record_path.unlink(missing_ok=True)


def _is_prefect_server(pid: int) -> bool:
    """The pid is still a ``prefect server start`` (never signal a process that reused the pid)."""
    if not Path("/proc/self").exists():
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"prefect" in cmdline and b"server" in cmdline and b"start" in cmdline


def _terminate(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the server's process group, then SIGKILL if it has not gone within ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:            # not our child (started by another command)
                if not _pid_alive(pid):
                    return
            time.sleep(0.1)


class PrefectAPI:
    """The resolved Prefect API for this process: ``url``, where it came from (``source``), and
    ``release()`` when done (the last user of the project's server stops it)."""

    def __init__(self, settings: ServerSettings):
        self.server = ProjectServer(settings)
        self.url: str | None = None
        self.source = ""
        self.started = False
        self._users = None
        self._env_before: dict[str, str | None] = {}

    def acquire(self, *, configured: bool = True) -> "PrefectAPI":
        """``configured=False`` skips step 1 (the tests' own project server, whatever the profile says)."""
        forbid_ephemeral()
        configured = configured and configured_api_url()
        if configured:
            self.url, self.source = configured, "PREFECT_API_URL"
            use_api(configured)
            return self
        srv = self.server
        with srv.resolving():
            rec = srv.recorded()
            if srv.verified(rec):
                self.url, self.source = rec["url"], f"the project's running Prefect server (pid {rec['pid']})"
            else:
                if rec:
                    log.info("the recorded Prefect server (%s) is not running or not this project's: starting one",
                             rec.get("url"))
                self.url, self.started = srv.spawn(), True
                self.source = f"the project's Prefect server (pid {srv.process.pid}), started for this command"
                print(f"Prefect: started the project's server at {self.url} (pid {srv.process.pid}); it stops "
                      f"when the last ledgerflow command using it ends", file=sys.stderr, flush=True)
            self._users = srv.join()
            atexit.register(self.release)         # whatever way the command ends
            if self.started:
                _exit_on_sigterm()
        self._env_before = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_UI_URL")}
        use_api(self.url)
        log.info("Prefect API: %s (%s)", self.url, self.source)
        return self

    def cancel(self) -> None:
        """Stop waiting for a server that is still starting (serve shutting down), and stop that
        server now: the thread starting it may not get to run again before the process exits."""
        self.server.cancelled.set()
        proc = self.server.starting
        if proc is not None and proc.poll() is None:
            _terminate(proc.pid)

    def release(self) -> None:
        if self._users is None:
            return
        srv = self.server
        atexit.unregister(self.release)
        for key, value in self._env_before.items():      # later flows of this process resolve again
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh()
        with srv.resolving():
            self._users.close()              # closing drops this process's shared lock
            self._users = None
            if os.environ.get(KEEP_ENV) == "1" and self.started:
                log.info("the project's Prefect server keeps running (%s=1): %s", KEEP_ENV, self.url)
                return
            if srv.last_user():
                srv.stop_recorded()
                log.info("stopped the project's Prefect server (no other process uses it)")

    def problem(self) -> str | None:
        """For serve's health: why the server this process uses has gone, if it has."""
        if self._users is None:
            return None
        proc, rec = self.server.process, self.server.recorded()
        code = proc.poll() if proc is not None else None
        if code is not None or not (rec and _pid_alive(rec.get("pid"))):
            how = f"exited with code {code}" if code is not None else "exited"
            return f"the project's Prefect server ({self.url}) {how}; see {self.server.home / 'server.log'}"
        return None


def _exit_on_sigterm() -> None:
    """A command killed with SIGTERM (no handler of its own) still stops the server it started."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def use_project_api(app) -> PrefectAPI:
    """Resolve the Prefect API for the rest of this process (a server it had to start is
    stopped when the process exits, unless another process still uses it)."""
    return PrefectAPI(settings_for(app)).acquire()


@contextmanager
def project_api(app) -> Iterator[PrefectAPI]:
    """Resolve the Prefect API for a command; the server it had to start is stopped on exit."""
    api = PrefectAPI(settings_for(app)).acquire()
    try:
        yield api
    finally:
        api.release()


class ServePrefect:
    """serve_hooks.BACKGROUND service: ``ledgerflow serve`` uses the project's API for its lifetime."""

    def __init__(self, app):
        self.api = PrefectAPI(settings_for(app))

    @property
    def ui_url(self) -> str:
        return os.environ.get("PREFECT_UI_URL") or (self.api.url or "").rsplit("/api", 1)[0]

    def start(self) -> None:
        self.api.acquire()
        print(f"Prefect UI: {self.ui_url}  (deployments and schedules: {self.ui_url}/deployments)", flush=True)

    def stop(self) -> None:
        self.api.cancel()
        self.api.release()

    def problem(self) -> str | None:
        return self.api.problem()


def background(app) -> ServePrefect:
    """serve_hooks.BACKGROUND entry (listed first, so later services find the API)."""
    return ServePrefect(app)
