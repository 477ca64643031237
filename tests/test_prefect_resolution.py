"""One Prefect API per project (runner.operate.prefect_server): PREFECT_API_URL wins; else the project's
recorded server, adopted only when verified; else the command starts the project's server and
the last process using it stops it. Never a stranger's server, never one left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from runner.operate.prefect_server import _pid_alive, healthy, server_home
from tests.conftest import ROOT
from tests.helpers_project import PROJECT, make_project
from tests.support.servers import free_port, serve_app

pytestmark = pytest.mark.slow


def _stranger() -> Starlette:
    """Something else answering like a Prefect server (another user's, another project's)."""
    return Starlette(routes=[Route("/api/health", lambda r: JSONResponse(True)),
                             Route("/api/admin/settings", lambda r: JSONResponse({"home": "/home/someone/.prefect"}))])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEDGERFLOW_"))}
    env.update(PREFECT_LOGGING_LEVEL="WARNING", PYTHONPATH=str(ROOT), **extra)
    return env


def _user(state: Path, port: int, env: dict | None = None) -> tuple[subprocess.Popen, dict]:
    """A process using the project's API (tests/support/prefect_user.py) and what it resolved."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.prefect_user", str(state), str(port)],
                            cwd=ROOT, env=env or _env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()            # the server may take minutes to start on a busy machine
    assert line, f"prefect_user exited with {proc.wait(60)} before resolving"
    return proc, json.loads(line)


def _done(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(120) == 0


def _prefect_processes(port: int) -> list[int]:
    """pids of `prefect server start ... --port PORT` still running."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect" in args and b"server" in args and str(port).encode() in args and _pid_alive(int(d.name)):
            out.append(int(d.name))
    return out


def test_prefect_api_url_wins_and_nothing_is_started(tmp_path):
    with serve_app(_stranger()) as other:
        proc, got = _user(tmp_path / "state", free_port(), _env(PREFECT_API_URL=other.url + "/api"))
        _done(proc)
    assert got == {"url": other.url + "/api", "source": "PREFECT_API_URL", "started": False, "record": None}
    assert not (tmp_path / "state" / "prefect").exists()


def test_the_projects_server_is_adopted_only_when_verified_and_the_last_user_stops_it(tmp_path):
    state = tmp_path / "state"
    with serve_app(_stranger()) as other:
        # a stale record naming the stranger, with a live pid: the pid alone must not be enough
        (state / "prefect").mkdir(parents=True)
        (state / "prefect" / "server.json").write_text(json.dumps({"url": other.url + "/api", "pid": os.getpid()}))
        first, a = _user(state, other.port)     # the stranger holds the default port: the next free one
        try:
            assert a["started"] and a["url"] != other.url + "/api"
            assert server_home(a["url"]) == str(state / "prefect") and (state / "prefect" / "prefect.db").exists()
            pid = a["record"]["pid"]
            second, b = _user(state, other.port)      # a second command adopts the verified running server
            assert (b["url"], b["started"]) == (a["url"], False)
            assert b["source"] == f"the project's running Prefect server (pid {pid})"
            _done(second)
            assert healthy(a["url"]) and _pid_alive(pid)    # the first one still uses it
        finally:
            _done(first)
    assert not _pid_alive(pid) and not healthy(a["url"])
    assert not (state / "prefect" / "server.json").exists()


def _project(tmp_path: Path) -> Path:
    text = PROJECT.replace("settings:\n", f"settings:\n  store_url: sqlite:///{tmp_path / 'store.db'}\n"
                                          "  state_dir: .state\n", 1)
    return make_project(tmp_path / "proj", text)


def _worker(project: Path, port: int, **env: str) -> subprocess.CompletedProcess:
    """``ledgerflow worker --until-idle``: a short command that needs the Prefect API."""
    return subprocess.run([sys.executable, "-m", "runner.cli", "worker", "--until-idle", "--log-level", "warning"],
                          cwd=project.parent, env=_env(LEDGERFLOW_PROJECT=str(project), LEDGERFLOW_PREFECT_PORT=str(port),
                                                       **env),
                          capture_output=True, text=True, timeout=900, check=False)


def test_a_short_command_that_started_the_server_leaves_none_running(tmp_path):
    project, port = _project(tmp_path), free_port()
    r = _worker(project, port)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("Prefect: started the project's server"))
    assert f"http://127.0.0.1:{port}/api" in line
    pid = int(line.split("(pid ")[1].split(")")[0])
    assert not _pid_alive(pid) and not _prefect_processes(port)
    assert not (project.parent / ".state" / "prefect" / "server.json").exists()


def test_a_missed_start_up_limit_is_a_one_line_error_and_leaves_nothing_running(tmp_path):
    project, port = _project(tmp_path), free_port()
    r = _worker(project, port, LEDGERFLOW_PREFECT_STARTUP_TIMEOUT="0.5")
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"error: the project's Prefect server on http://127.0.0.1:{port}/api did not answer "
                           "within 0.5 s (log: ")
    assert line.endswith("raise LEDGERFLOW_PREFECT_STARTUP_TIMEOUT or serve.prefect_startup_timeout, or set "
                         "PREFECT_API_URL to a running Prefect server")
    assert not _prefect_processes(port)


def test_a_port_set_by_the_user_and_taken_by_a_stranger_is_an_error_not_adopted(tmp_path):
    project = _project(tmp_path)
    with serve_app(_stranger()) as other:
        r = _worker(project, other.port)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"error: port {other.port} (LEDGERFLOW_PREFECT_PORT / serve.prefect_port) is in use "
                                "by another program, not this project's Prefect server: choose a free port, or set "
                                "PREFECT_API_URL to use that server")


def test_the_start_up_limit_setting_is_checked():
    from runner.core.errors import LedgerflowError
    from runner.operate.prefect_server import settings_for
    app = type("A", (), {"project": type("P", (), {"raw": {"serve": {"prefect_startup_timeout": "soon"}},
                                                   "file": "ledgerflow.yaml", "state_dir": Path("/tmp/x")})()})()
    with pytest.raises(LedgerflowError, match=r"ledgerflow.yaml: serve.prefect_startup_timeout: expected a positive "
                                              r"number of seconds, got 'soon'"):
        settings_for(app)
    app.project.raw["serve"] = {"prefect_startup_timeout": 42, "prefect_port": 4300}
    s = settings_for(app)
    assert (s.startup_limit, s.port, s.port_fixed) == (42.0, 4300, True)


def test_the_projects_server_takes_its_database_from_the_environment_and_checks_it(monkeypatch):
    """``LEDGERFLOW_PREFECT_DATABASE_URL`` (PostgreSQL for several workers) reaches the server it starts;
    a URL Prefect's server cannot use is refused naming the variable, without echoing the URL."""
    from runner.core.errors import LedgerflowError
    from runner.operate.prefect_server import ProjectServer, settings_for
    app = type("A", (), {"project": type("P", (), {"raw": {}, "file": "ledgerflow.yaml",
                                                   "state_dir": Path("/tmp/x")})()})()
    assert "sqlite+aiosqlite:////tmp/x/prefect/" in ProjectServer(settings_for(app)).environment("u")[
        "PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    monkeypatch.setenv("LEDGERFLOW_PREFECT_DATABASE_URL", "postgresql://u:secret@db/prefect")
    with pytest.raises(LedgerflowError, match=r"LEDGERFLOW_PREFECT_DATABASE_URL: expected postgresql\+asyncpg://") as e:
        settings_for(app)
    assert "secret" not in str(e.value)
    monkeypatch.setenv("LEDGERFLOW_PREFECT_DATABASE_URL", "postgresql+asyncpg://u@db/prefect")
    env = ProjectServer(settings_for(app)).environment("u")
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == "postgresql+asyncpg://u@db/prefect"


def test_a_port_taken_between_the_check_and_the_bind_means_another_port(tmp_path, monkeypatch):
    """Two processes (xdist workers, say) may pick the same free port: the one that loses the bind
    starts on another port instead of failing."""
    from runner.operate.prefect_server import ProjectServer, ServerSettings
    with serve_app(_stranger()) as other:
        srv = ProjectServer(ServerSettings(tmp_path / "state", port=other.port))
        srv.home.mkdir(parents=True)
        ports = iter([other.port, free_port()])             # the first "free" port is taken by the time it binds
        monkeypatch.setattr(srv, "choose_port", lambda: next(ports))
        try:
            url = srv.spawn()
            assert url != other.url + "/api" and server_home(url) == str(srv.home)
        finally:
            srv.stop_recorded()
    assert not healthy(url) and srv.process.poll() is not None


def test_a_command_stopped_with_sigterm_stops_the_server_it_started(tmp_path):
    import signal
    proc, got = _user(tmp_path / "state", free_port())
    assert got["started"]
    pid = got["record"]["pid"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 128 + signal.SIGTERM
    assert not _pid_alive(pid) and not healthy(got["url"])
    assert not (tmp_path / "state" / "prefect" / "server.json").exists()


def test_serve_owns_the_projects_server_for_its_lifetime(tmp_path):
    """serve answers at once, shows the Prefect service starting then running in /healthz, and
    stops the project's server when it stops (no other process uses it)."""
    import signal
    import time

    import httpx
    project, port, prefect_port = _project(tmp_path), free_port(), free_port()
    env = _env(LEDGERFLOW_PROJECT=str(project), LEDGERFLOW_PREFECT_PORT=str(prefect_port),
               STRIPE_WEBHOOK_SECRET="whsec_test_only_0123456789")
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([sys.executable, "-m", "runner.cli", "serve", "--port", str(port), "--log-level",
                                  "warning"], cwd=project.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    prefect = "runner.operate.prefect_server:background"
    seen, deadline = [], time.monotonic() + 900
    try:
        while time.monotonic() < deadline and "running" not in seen:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                state = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()["services"][prefect]["state"]
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            assert state != "failed", (tmp_path / "serve.log").read_text()[-2000:]
            if not seen or seen[-1] != state:
                seen.append(state)
            time.sleep(0.2)
        assert seen[0] in ("waiting", "starting") and seen[-1] == "running", seen
        rec = json.loads((project.parent / ".state" / "prefect" / "server.json").read_text())
        assert healthy(rec["url"]) and rec["url"] == f"http://127.0.0.1:{prefect_port}/api"
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(180)
    assert not _pid_alive(rec["pid"]) and not (project.parent / ".state" / "prefect" / "server.json").exists()


def test_after_release_this_process_resolves_again(tmp_path, monkeypatch):
    """A process that started and stopped the project's server is not left pointing at it."""
    from runner.operate.prefect_server import PrefectAPI, ServerSettings
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_UI_URL", "http://ui.example.internal")
    api = PrefectAPI(ServerSettings(tmp_path / "state", port=free_port())).acquire(configured=False)
    try:
        assert os.environ["PREFECT_API_URL"] == api.url
    finally:
        api.release()
    assert "PREFECT_API_URL" not in os.environ and os.environ["PREFECT_UI_URL"] == "http://ui.example.internal"
    from prefect.settings import get_current_settings
    assert get_current_settings().api.url is None


def test_serve_stopping_while_its_server_still_starts_leaves_no_server_behind(tmp_path, monkeypatch):
    """serve stopped (SIGTERM) while the project's server is still starting: the server is stopped
    by the stop itself, not later by the starting thread, which may never run again before the
    process exits (a leaked ``prefect server start`` was seen running 40 minutes later)."""
    import threading

    from runner.core.errors import LedgerflowError
    from runner.operate.prefect_server import PrefectAPI, ServerSettings
    api = PrefectAPI(ServerSettings(tmp_path / "state", port=free_port(), startup_limit=600))
    api.server.home.mkdir(parents=True)
    slow = [sys.executable, "-c", "import time; time.sleep(600)"]     # a server that never answers
    monkeypatch.setattr(api.server, "_popen",
                        lambda port, url: subprocess.Popen(slow, start_new_session=True))
    errors: list[Exception] = []

    def start() -> None:
        try:
            api.acquire(configured=False)
        except LedgerflowError as exc:
            errors.append(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    deadline = __import__("time").monotonic() + 120
    while api.server.starting is None and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.05)
    proc = api.server.starting
    assert proc is not None and proc.poll() is None
    api.cancel()                                   # what ServePrefect.stop() does first
    assert proc.poll() is not None, "the starting server must be gone when stop returns"
    starter.join(60)
    assert errors and "stopped while starting" in str(errors[0]) and api.url is None
