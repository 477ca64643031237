"""Seconds from ``ledgerflow serve`` start to the first 200 on a signed webhook.

Two cases, each run ``--rounds`` times (a fresh project and store each time):

* ``Prefect to start``: no ``PREFECT_API_URL`` and no project server running, so
  serve's first background service starts the project's Prefect server, after
  the port is open;
* ``Prefect running``: the project's Prefect server is already running (started
  by this bench through ``runner.operate.prefect_server``, as any command would), so
  serve adopts it.

serve runs with every background service (dispatcher, delivery loop, schedule
runner...). Printed per run: seconds to the first 200 (and the CPU-seconds serve
itself used by then: the wall time a quiet machine would take, give or take the
interpreter's start), to /healthz showing every service running, and the 1-minute
load average (the machine may be busy).

serve runs with compiled bytecode cached, as an installed package has it (pip
compiles on install): under a cache directory of the bench's own, filled by one
import of everything serve loads before the rounds. ``--no-bytecode-cache``
keeps the environment's setting (a dev shell with ``PYTHONDONTWRITEBYTECODE``
compiles every module of the project from source at each start: ~0.3 CPU-s).

    .venv/bin/python bench/bench_serve_start.py [--rounds 3] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.core import jsonio  # noqa: E402
from runner.ingest.webhooks import sign  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

SECRET = "whsec_bench_only_0123456789abcdef"
PROJECT = """\
settings:
  state_dir: .state
  store_url: sqlite:///{store}
  home_currency: USD
  timezone: UTC
connections:
  csv: {{type: csv, directory: out/csv}}
stripe:
  endpoints:
    platform:
      path: /webhooks/stripe
      secrets: [{{env: BENCH_WHSEC}}]
"""


def make_project(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    shutil.copytree(ROOT / "mappings" / "csv", root / "mappings" / "csv")
    shutil.copy(ROOT / "flows" / "stripe-movements-to-csv.yaml", root / "flows")
    path = root / "ledgerflow.yaml"
    path.write_text(PROJECT.format(store=root / "store.db"))
    return path


def signed_event() -> tuple[bytes, dict]:
    ev = {"id": f"evt_{uuid.uuid4().hex[:20]}", "object": "event", "type": "charge.succeeded",
          "created": int(time.time()), "livemode": False, "api_version": "2024-06-20",
          "data": {"object": {"id": f"ch_{uuid.uuid4().hex[:20]}", "object": "charge", "amount": 1200,
                              "currency": "usd"}}}
    body = jsonio.dumps(ev)
    return body.encode(), {"Stripe-Signature": sign(body, SECRET, int(time.time())),
                           "Content-Type": "application/json"}


BYTECODE: dict[str, str] = {}     # PYTHONPYCACHEPREFIX for serve, unless --no-bytecode-cache
WARM = ("runner.cli", "runner.cli.commands.serve", "runner.operate.server.listeners", "runner.app", "runner.store",
        "runner.store.migrations", "runner.operate.reload", "runner.operate.prefect_server",
        "runner.ingest.dispatch", "runner.ingest.catchup", "runner.deliver.worker", "runner.operate.deployments",
        "runner.language.planner", "connectors.quickbooks_desktop.service", "prefect")


def env_for(project: Path, prefect_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEDGERFLOW_"))}
    if BYTECODE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update(BYTECODE)
    env.update(LEDGERFLOW_PROJECT=str(project), BENCH_WHSEC=SECRET, LEDGERFLOW_PREFECT_PORT=str(prefect_port),
               PREFECT_LOGGING_LEVEL="WARNING")
    return env


def cache_bytecode(folder: Path) -> None:
    """Compile what serve imports once, into ``folder`` (the bench's own cache, not the source tree)."""
    BYTECODE["PYTHONPYCACHEPREFIX"] = str(folder)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import importlib\nfor m in %r: importlib.import_module(m)" % (WARM,)],
                   cwd=ROOT, env={**env, **BYTECODE}, check=True, stdout=subprocess.DEVNULL)


CPU: list[float] = []      # serve's own CPU seconds at its first 200 (what a quiet machine would take)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(project: Path, prefect_port: int, limit: float = 900.0) -> tuple[float, float | None]:
    """(seconds to the first 200, seconds until every service runs, or None if one failed)."""
    port = free_port()
    body, headers = signed_event()
    log = open(project.parent / "serve.log", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "serve", "--port", str(port),
                             "--log-level", "warning"], cwd=project.parent, env=env_for(project, prefect_port),
                            stdout=log, stderr=subprocess.STDOUT)
    first = services = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while time.monotonic() - t0 < limit:
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited with {proc.returncode}: see {project.parent / 'serve.log'}")
                try:
                    if first is None:
                        if client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200:
                            first = time.monotonic() - t0
                            CPU.append(cpu_seconds(proc.pid))
                    states = {s["state"] for s in client.get("/healthz").json()["services"].values()}
                    if "failed" in states:
                        return first, None
                    if states == {"running"} and first is not None:
                        services = time.monotonic() - t0
                        return first, services
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise SystemExit(f"serve did not answer within {limit:.0f} s")
    finally:
        proc.terminate()
        proc.wait(120)
        log.close()


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def case(name: str, rounds: int, running: bool) -> list[float]:
    from runner.operate.prefect_server import PrefectAPI, ServerSettings
    firsts = []
    for _ in range(rounds):
        tmp = Path(tempfile.mkdtemp(prefix="ledgerflow-bench-serve-"))
        project, prefect_port = make_project(tmp / "p"), free_port()
        held = None
        if running:            # the project's server already up, as a running worker or command leaves it
            held = PrefectAPI(ServerSettings(project.parent / ".state", port=prefect_port, port_fixed=True)) \
                .acquire(configured=False)
        try:
            first, services = one_run(project, prefect_port)
        finally:
            if held is not None:
                held.release()
        firsts.append(first)
        svc = f"{services:6.1f} s" if services is not None else "  a service failed (see serve.log)"
        print(f"  {name:<17} first 200 after {first:5.2f} s ({CPU[-1]:4.2f} CPU-s of serve); every service "
              f"running after {svc}   ({load()})", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return firsts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-bytecode-cache", action="store_true", help="keep the environment's bytecode setting")
    args = p.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="ledgerflow-bench-pyc-"))
    if not args.no_bytecode_cache:
        cache_bytecode(cache)
    bytecode = "cached" if BYTECODE else ("not written (PYTHONDONTWRITEBYTECODE)"
                                          if os.environ.get("PYTHONDONTWRITEBYTECODE") else "as the environment has it")
    print(f"serve start-up: seconds from `ledgerflow serve` to the first 200 on a signed webhook "
          f"(aim < 2 s), {args.rounds} round(s) per case; bytecode {bytecode}")
    results = {"Prefect to start": case("Prefect to start", args.rounds, running=False),
               "Prefect running": case("Prefect running", args.rounds, running=True)}
    for name, firsts in results.items():
        print(f"  {name:<17} median {statistics.median(firsts):5.2f} s, worst {max(firsts):5.2f} s")
    print(f"  serve's CPU-seconds at the first 200: median {statistics.median(CPU):4.2f}, worst {max(CPU):4.2f}")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
