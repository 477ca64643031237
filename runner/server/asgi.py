"""The Starlette app behind ``ledgerflow serve``.

* ``POST`` on each configured Stripe endpoint path (and always ``/webhooks/stripe``):
  verify, queue in the inbox through the group-commit writer, answer 200 once
  the event is committed (a duplicate id also gets 200 and changes nothing).
  Bad requests get 400/413 with a short reason; they are counted and logged
  without their bodies, and never queued. If the inbox cannot commit, 503 so
  Stripe retries.
* ``GET /healthz``: liveness and the receiver's counters.
* every ``serve_hooks.ASGI_MOUNTS`` entry is mounted; every
  ``serve_hooks.BACKGROUND`` service is started with the app and stopped with it.
"""

from __future__ import annotations

import logging
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from .. import serve_hooks
from ..stripe_config import Endpoint, StripeSettings, stripe_settings
from ..webhooks import Rejected, verify
from .inbox_writer import InboxUnavailable, InboxWriter

log = logging.getLogger("ledgerflow.webhooks")


class Receiver:
    """Counters and the request handler for one path (one or more endpoints' secrets)."""

    def __init__(self, settings: StripeSettings, writer: InboxWriter, stats: Counter, rejects: Counter):
        self.settings = settings
        self.writer = writer
        self.stats = stats
        self.rejects = rejects

    def handler(self, path: str, endpoints: Sequence[Endpoint]):
        max_bytes = self.settings.max_body_bytes
        # one secret list per tolerance; the source names the endpoint whose secret verified
        groups = [(ep, list(ep.secrets), ep.tolerance) for ep in endpoints]

        async def receive(request: Request) -> Response:
            try:
                body = await _read_body(request, max_bytes)
                header = request.headers.get("stripe-signature")
                verified, source = None, None
                last: Rejected | None = None
                for ep, secrets, tolerance in groups:
                    try:
                        verified = verify(body, header, secrets, tolerance, max_bytes)
                        source = ep.source
                        break
                    except Rejected as exc:
                        if last is None or exc.reason.startswith("timestamp"):
                            last = exc
                if verified is None:
                    raise last or Rejected(400, "no signing secret configured for this path")
            except Rejected as exc:
                self._reject(request, path, exc)
                return JSONResponse({"error": exc.reason}, status_code=exc.status)
            try:
                new = await self.writer.submit(verified.event, verified.raw, source)
            except InboxUnavailable:
                self.stats["unavailable"] += 1
                return JSONResponse({"error": "inbox unavailable, retry later"}, status_code=503)
            self.stats["accepted" if new else "duplicate"] += 1
            return JSONResponse({"received": True, "id": verified.event["id"], "duplicate": not new})

        return receive

    def _reject(self, request: Request, path: str, exc: Rejected) -> None:
        self.rejects[exc.reason.split(" (")[0]] += 1
        total = sum(self.rejects.values())
        client = request.client.host if request.client else "?"
        log.warning("rejected webhook POST %s from %s: %d %s (rejected so far: %d)", path, client, exc.status,
                    exc.reason, total)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise Rejected(413, f"body larger than {max_bytes} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Rejected(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_asgi(app: Any, *, settings: StripeSettings | None = None, background: bool = True,
               mounts: bool = True) -> Starlette:
    """The ASGI app for ``ledgerflow serve`` over a loaded ``App``.

    ``background=False`` leaves the serve_hooks background services off (tests
    of the receiver alone); the inbox writer always runs.
    """
    settings = settings or stripe_settings(app.project.raw.get("stripe"), app.project.file)
    if not all(ep.secrets for ep in settings.endpoints):
        settings.resolve_secrets(app.secrets)
    store = app.store
    writer = InboxWriter(store)
    stats: Counter = Counter()
    rejects: Counter = Counter()
    receiver = Receiver(settings, writer, stats, rejects)

    routes: list[Any] = [Route(path, receiver.handler(path, eps), methods=["POST"])
                         for path, eps in settings.routes().items()]

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "accepted": stats["accepted"], "duplicate": stats["duplicate"],
                             "unavailable": stats["unavailable"], "rejected": dict(rejects),
                             "batches": writer.batches})

    routes.append(Route("/healthz", healthz, methods=["GET"]))
    if mounts:
        for ref in serve_hooks.ASGI_MOUNTS:
            prefix, sub = serve_hooks.load(ref)(app)
            routes.append(Mount(prefix, app=sub))

    @asynccontextmanager
    async def lifespan(_: Starlette):
        writer.start()
        services = []
        try:
            if background:
                for ref in serve_hooks.BACKGROUND:
                    svc = serve_hooks.load(ref)(app)
                    svc.start()
                    services.append((ref, svc))
                    log.info("started %s", ref)
            yield
        finally:
            for ref, svc in reversed(services):
                try:
                    svc.stop()
                except Exception:  # noqa: BLE001
                    log.exception("stopping %s failed", ref)
            writer.stop()

    asgi = Starlette(routes=routes, lifespan=lifespan)
    asgi.state.writer = writer
    asgi.state.stats = stats
    asgi.state.rejects = rejects
    return asgi
