"""An HTTP target that fails on demand, de-duplicating by Idempotency-Key as real targets do.

``FlakyTarget().app`` is an ASGI app. ``POST /docs`` creates a document from
the JSON body unless a failure is scripted for it:

* ``fail(key, *modes)`` scripts the next answers for one idempotency key;
  ``fail_all(*modes)`` for any key (consumed in order, then normal service).
* modes: ``"500"``, ``"503"``, ``"400"``, ``"401"``, ``"429:SECONDS"`` (Retry-After
  in seconds), ``"429-date:SECONDS"`` (Retry-After as an HTTP date),
  ``"timeout"`` (hangs before doing anything), ``"timeout-after-create"``
  (creates the document, then hangs: the client never hears back),
  ``"slow"`` (creates the document, waits ``hang`` seconds, then answers 201).
* ``"422-pii"`` answers a validation fault that echoes an email, a name and a
  card number (as some targets do), to prove they never reach logs or Slack.
* ``require`` lists body fields that must be present, else 400 with a
  validation fault naming the field (the data was wrong: permanent).

A repeated key answers 200 with the existing document and creates nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict, deque
from email.utils import formatdate

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class FlakyTarget:
    def __init__(self, *, hang: float = 3.0, require: tuple[str, ...] = ()):
        self.hang = hang
        self.require = list(require)
        self.docs: dict[str, dict] = {}
        self.requests: list[tuple[str, int]] = []    # (idempotency key, status answered)
        self.posts_by_key: dict[str, int] = defaultdict(int)
        self._scripted: dict[str, deque[str]] = defaultdict(deque)
        self._all: deque[str] = deque()
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/docs", self.create, methods=["POST"]),
                                     Route("/docs", self.list_docs, methods=["GET"])])

    # ---- scripting (from the test thread) ---------------------------------

    def fail(self, key: str, *modes: str) -> None:
        with self._lock:
            self._scripted[key].extend(modes)

    def fail_all(self, *modes: str) -> None:
        with self._lock:
            self._all.extend(modes)

    def _next_mode(self, key: str) -> str | None:
        with self._lock:
            if self._scripted[key]:
                return self._scripted[key].popleft()
            if self._all:
                return self._all.popleft()
        return None

    @property
    def created(self) -> int:
        return len(self.docs)

    # ---- HTTP ------------------------------------------------------------------

    async def list_docs(self, request: Request) -> Response:
        return JSONResponse({"count": len(self.docs), "keys": sorted(self.docs)})

    async def create(self, request: Request) -> Response:
        key = request.headers.get("idempotency-key", "")
        self.posts_by_key[key] += 1
        mode = self._next_mode(key)
        answer = await self._answer(key, mode, request)
        self.requests.append((key, answer.status_code))
        return answer

    async def _answer(self, key: str, mode: str | None, request: Request) -> Response:
        if mode == "timeout":
            await asyncio.sleep(self.hang)
            return JSONResponse({"error": "too late"}, status_code=504)
        if mode in ("500", "503"):
            return JSONResponse({"error": {"type": "server_error", "message": "Internal error, try again"}},
                                status_code=int(mode))
        if mode and mode.startswith("429"):
            seconds = int(mode.split(":")[1])
            header = formatdate(time.time() + seconds, usegmt=True) if mode.startswith("429-date") else str(seconds)
            return JSONResponse({"error": {"type": "rate_limited", "message": "Too many requests"}},
                                status_code=429, headers={"Retry-After": header})
        if mode == "401":
            return JSONResponse({"error": {"type": "unauthorized", "message": "Token expired"}}, status_code=401)
        if mode == "422-pii":       # a target that echoes customer data in its fault text
            body = json.loads(await request.body() or b"{}")
            who = f"{body.get('email', 'jane.doe@example.com')} ({body.get('customer_name', 'n/a')})"
            return JSONResponse({"error": {"type": "validation", "message": f"customer {who} "
                                           "card 4242 4242 4242 4242 rejected", "name": "Jane Doe"}},
                                status_code=422)
        if mode == "400":
            return JSONResponse({"error": {"type": "invalid_request", "message": "Rejected by the target"}},
                                status_code=400)
        if not key:
            return JSONResponse({"error": {"type": "invalid_request", "message": "Idempotency-Key header required"}},
                                status_code=400)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": {"type": "invalid_request", "message": "body is not JSON"}}, status_code=400)
        missing = [f for f in self.require if f not in body]
        if missing:
            return JSONResponse({"error": {"type": "validation", "field": missing[0],
                                           "message": f"field {missing[0]} is required"}}, status_code=400)
        if key in self.docs:
            return JSONResponse(self.docs[key], status_code=200)
        doc = {"id": f"doc_{len(self.docs) + 1}", "key": key, "body": body}
        self.docs[key] = doc
        if mode in ("timeout-after-create", "slow"):
            await asyncio.sleep(self.hang)
        return JSONResponse(doc, status_code=201)
