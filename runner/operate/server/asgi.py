"""The ASGI app behind ``ledgerflow serve`` (the webhook paths, then Starlette).

* ``POST`` on each configured Stripe endpoint path (and always ``/webhooks/stripe``):
  verify, queue in the inbox through the group-commit writer, answer 200 once
  the event is committed (a duplicate id also gets 200 and changes nothing).
  Bad requests get 400/408/413 with a short reason; they are counted (under a
  fixed label) and logged without their bodies, and never queued. If the inbox
  cannot commit, 503 so Stripe retries. A Content-Length over the limit is
  refused before anything is read; a body is streamed with a size cap and a
  deadline (``serve.limits.body_timeout``).
* ``GET /healthz``: liveness, the receiver's counters (fixed labels and
  numbers only: no addresses, ids or anything a sender wrote) and each
  background service's state (``services``: starting, running, failed with
  the reason), the flows' (``flows``, in the process that plans: loaded, or
  failed with the first problem; ``status`` is ``degraded`` while a service or
  the flows have failed), and which process answered (``process``: pid,
  receiver index of ``serve --workers``).
* every ``serve_hooks.ASGI_MOUNTS`` entry is mounted (unless ``mounts`` names
  the ones served elsewhere, as the Web Connector on ``serve.qbwc``); the
  ``serve_hooks.BACKGROUND`` services are started by ``start_services()`` once the
  port is open (``runner.operate.server.supervisor``) and stopped with the app.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from runner.ingest.inbox_writer import InboxUnavailable, InboxWriter
from runner.ingest.webhooks import Rejected, verify
from runner.language.stripe_config import StripeSettings, stripe_settings
from runner.operate import serve_hooks
from runner.operate.server.limits import BodyTimeout, BodyTooLarge, Disconnected, Limits, read_body
from runner.operate.server.supervisor import Supervisor

log = logging.getLogger("ledgerflow.webhooks")


class Receiver:
    """The webhook paths as a small ASGI app in front of Starlette (the hot path:
    no routing tables, request objects or middleware per event); every other
    request, and the lifespan, goes to ``fallback``."""

    def __init__(self, settings: StripeSettings, writer: InboxWriter, fallback: Any = None,
                 limits: Limits | None = None):
        self.settings = settings
        self.writer = writer
        self.fallback = fallback
        self.limits = limits or Limits()
        self.stats: Counter = Counter()
        self.rejects: Counter = Counter()
        self.services: Supervisor | None = None
        self.watcher: Any = None      # hot reload in a receiver without the background services
        self.configure(settings)

    def configure(self, settings: StripeSettings) -> None:
        """Serve ``settings``' endpoints (paths, resolved secrets) from now on: at start, and on
        each hot reload that changes ``stripe:`` (``runner.operate.reload.follow_endpoints``)."""
        self.paths = {path: [(ep, list(ep.secrets), ep.tolerance, ep.future_tolerance) for ep in eps]
                      for path, eps in settings.routes().items()}
        self.settings = settings

    def start_services(self) -> None:
        """Start the background services (once the listeners are up: webhooks never wait for them)."""
        if self.services is not None:
            self.services.start()
        if self.watcher is not None:
            self.watcher.start()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.fallback(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _respond(send, 405, {"error": "method not allowed (Stripe POSTs webhooks)"}, [(b"allow", b"POST")])
            return
        path = scope["path"]
        max_bytes = self.settings.max_body_bytes
        try:
            header = None
            for k, v in scope["headers"]:       # one pass: the signature and the declared length
                if k == b"stripe-signature":
                    header = v.decode("latin-1")
                elif k == b"content-length" and v.isdigit() and int(v) > max_bytes:
                    raise Rejected(413, f"body larger than {max_bytes} bytes")
            body = await _read_body(receive, max_bytes, self.limits.body_timeout)
            verified, source, last = None, None, None
            for ep, secrets, tolerance, future in self.paths[path]:
                try:
                    verified = verify(body, header, secrets, tolerance, max_bytes, future)
                    source = ep.source
                    break
                except Rejected as exc:
                    if last is None or exc.reason.startswith("timestamp"):
                        last = exc
            if verified is None:
                raise last or Rejected(400, "no signing secret configured for this path")
        except Rejected as exc:
            self._reject(scope, path, exc)
            await _respond(send, exc.status, {"error": exc.reason})
            return
        try:
            new = await self.writer.submit(verified.event, verified.raw, source)
        except InboxUnavailable:
            self.stats["unavailable"] += 1
            await _respond(send, 503, {"error": "inbox unavailable, retry later"})
            return
        self.stats["accepted" if new else "duplicate"] += 1
        await _respond(send, 200, {"received": True, "id": verified.event["id"], "duplicate": not new})

    def _reject(self, scope, path: str, exc: Rejected) -> None:
        kind = exc.kind.split(" (")[0]          # a fixed label: never anything the sender wrote
        self.rejects[kind] += 1
        total = sum(self.rejects.values())
        client = scope.get("client")
        log.warning("rejected webhook POST %s from %s: %d %s (rejected so far: %d)", path,
                    client[0] if client else "?", exc.status, kind, total)


async def _read_body(receive, max_bytes: int, timeout: float) -> bytes:
    try:
        return await read_body(receive, max_bytes, timeout)
    except Disconnected:
        raise Rejected(400, "client disconnected before the body was complete") from None
    except BodyTooLarge:
        raise Rejected(413, f"body larger than {max_bytes} bytes") from None
    except BodyTimeout:
        raise Rejected(408, f"body not received within {timeout:g}s", "body not received in time") from None


async def _respond(send, status: int, payload: dict, extra: list | None = None) -> None:
    body = orjson.dumps(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def build_asgi(app: Any, *, settings: StripeSettings | None = None, background: bool = True,
               mounts: bool | list[str] = True, limits: Limits | None = None,
               worker: tuple[int, int] | None = None) -> Receiver:
    """The ASGI app for ``ledgerflow serve`` over a loaded ``App``.

    ``background=False`` leaves the serve_hooks background services off (tests
    of the receiver alone); the inbox writer always runs. ``mounts`` is True
    (every serve_hooks mount), False, or the list of mounts to include. ``worker``
    is (index, count) of this receiver process under ``serve --workers``.
    """
    settings = settings or stripe_settings(app.project.raw.get("stripe"), app.project.file)
    if not all(ep.secrets for ep in settings.endpoints):
        settings.resolve_secrets(app.secrets)
    if limits is None:
        limits = Limits.from_config((app.project.raw.get("serve") or {}).get("limits"))
    writer = InboxWriter(app.store)
    receiver = Receiver(settings, writer, limits=limits)
    from runner.operate.reload import follow_endpoints
    # hot reload: new paths and signing secrets, no restart (the BACKGROUND watcher, else one of its own)
    receiver.watcher = follow_endpoints(app, receiver, watch=not background)

    receiver.services = Supervisor(app, serve_hooks.BACKGROUND if background else [])
    index, count = worker or (0, 1)
    process = {"pid": os.getpid(), "receiver": index, "receivers": count}

    async def healthz(_: Request) -> Response:
        services = receiver.services.health()
        flows = receiver.services.flows_health()
        failed = any(s["state"] == "failed" for s in [*services.values(), *([flows] if flows else [])])
        body = {"status": "degraded" if failed else "ok", "accepted": receiver.stats["accepted"],
                "duplicate": receiver.stats["duplicate"], "unavailable": receiver.stats["unavailable"],
                "rejected": dict(receiver.rejects), "batches": writer.batches, "services": services}
        if flows is not None:
            body["flows"] = flows
        return JSONResponse({**body, "process": process})

    routes: list[Any] = [Route("/healthz", healthz, methods=["GET"])]
    refs = serve_hooks.ASGI_MOUNTS if mounts is True else (list(mounts) if mounts else [])
    if refs:
        from runner.connector_runtime import runtime_for
        runtime = runtime_for(app)           # what a connector's service may use (connectors/CONTRACT.md)
    for ref in refs:
        prefix, sub = serve_hooks.load(ref)(runtime)
        routes.append(Mount(prefix, app=sub))

    @asynccontextmanager
    async def lifespan(_: Starlette):
        writer.start()               # the services start once the port is open: Receiver.start_services
        try:
            yield
        finally:
            receiver.services.stop()
            if receiver.watcher is not None:
                receiver.watcher.stop()
            writer.stop()

    receiver.fallback = Starlette(routes=routes, lifespan=lifespan)
    receiver.fallback.state.receiver = receiver
    return receiver
