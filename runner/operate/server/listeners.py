"""The listeners of ``ledgerflow serve``: the webhooks (with /healthz and the mounts) and,
when ``serve.qbwc.port`` is set, the Web Connector on its own host and port.

Both are uvicorn servers in one event loop, with the same limits
(``runner.operate.server.limits``); when one stops (a signal, a failed bind), the other
is stopped too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from runner.operate import serve_hooks
from runner.operate.server.asgi import build_asgi
from runner.operate.server.limits import Limits, Listener, serve_settings

log = logging.getLogger("ledgerflow.serve")

QBWC_MOUNT = "connectors.quickbooks_desktop.service:mount"


def build_servers(app: Any, host: str, port: int, *, background: bool = True, log_level: str = "info",
                  limits: Limits | None = None, qbwc: Listener | None | bool = True,
                  worker: tuple[int, int] | None = None, own_listeners: bool = True) -> list[uvicorn.Server]:
    """The uvicorn servers to run: [webhooks] or [webhooks, Web Connector].

    ``qbwc=True`` reads ``serve.qbwc`` from the project; a ``Listener`` overrides it; None/False keeps the
    Web Connector beside the webhooks. ``worker`` is (index, count) of a receiver of ``serve --workers``;
    ``own_listeners=False`` leaves the Web Connector's own listener to another process (receiver 0)."""
    cfg_limits, cfg_qbwc = serve_settings(app.project.raw.get("serve"))
    limits = limits or cfg_limits
    listener = cfg_qbwc if qbwc is True else (qbwc or None)
    separate = listener is not None and QBWC_MOUNT in serve_hooks.ASGI_MOUNTS
    mounts = [m for m in serve_hooks.ASGI_MOUNTS if not (separate and m == QBWC_MOUNT)]
    asgi = build_asgi(app, background=background, mounts=mounts, limits=limits, worker=worker)
    common = dict(log_level=log_level, access_log=False, timeout_graceful_shutdown=10, **limits.uvicorn_options())
    servers = [uvicorn.Server(uvicorn.Config(asgi, host=host, port=port, **common))]
    for path in asgi.paths:
        log.info("Stripe webhooks: POST http://%s:%d%s", host, port, path)
    if separate and own_listeners:
        from runner.connector_runtime import runtime_for
        prefix, sub = serve_hooks.load(QBWC_MOUNT)(runtime_for(app))
        qapp = Starlette(routes=[Mount(prefix, app=sub)])
        servers.append(uvicorn.Server(uvicorn.Config(qapp, host=listener.host, port=listener.port, lifespan="off",
                                                     **common)))
        log.info("QuickBooks Web Connector: http://%s:%d%s/ (its own listener; not on %s:%d)",
                 listener.host, listener.port, prefix, host, port)
    return servers


async def serve_all(servers: list[uvicorn.Server], sockets: list | None = None) -> None:
    """Run every server until one of them stops; then stop the others. The background
    services start once every listener is up (``start_when_listening``). ``sockets``: already
    listening sockets for the first (webhooks) server, as ``serve --workers`` shares one."""
    tasks = [asyncio.create_task(s.serve(sockets=sockets if i == 0 else None)) for i, s in enumerate(servers)]
    tasks.append(asyncio.create_task(start_when_listening(servers)))
    try:
        await asyncio.wait(tasks[:-1], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for s in servers:
            s.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
            raise r


async def start_when_listening(servers: list[uvicorn.Server]) -> None:
    """Start the apps' background services once every listener has its port open."""
    while not all(s.started for s in servers):
        if any(s.should_exit for s in servers):
            return
        await asyncio.sleep(0.01)
    for s in servers:
        start = getattr(s.config.app, "start_services", None)
        if callable(start):
            start()
