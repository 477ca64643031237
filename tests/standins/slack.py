"""A local Slack: incoming webhooks and ``chat.postMessage``, as Slack documents them.

* ``POST /services/T000/B000/<secret>``: an incoming webhook. 200 ``ok`` (text);
  400 ``invalid_payload`` without text/blocks; 403 ``invalid_token`` for an
  unknown webhook path; 429 with Retry-After when told to.
* ``POST /api/chat.postMessage``: Web API. Bearer token in Authorization; always
  HTTP 200 with ``{"ok": false, "error": "invalid_auth" | "channel_not_found" |
  "no_text"}`` on failure, HTTP 429 with Retry-After when rate limited.

Every accepted message lands in ``messages`` (via, channel, text, blocks).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

WEBHOOK_PATH = "/services/T0LEDGER/B0ALERTS/standinsecret"
BOT_TOKEN = "xoxb-standin-token"


class SlackStandIn:
    def __init__(self, channels: tuple[str, ...] = ("#finance-ops", "#alerts")):
        self.channels = set(channels)
        self.messages: list[dict] = []
        self.rejected: list[tuple[str, str]] = []
        self._throttle = 0
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/services/{rest:path}", self.webhook, methods=["POST"]),
                                     Route("/api/chat.postMessage", self.post_message, methods=["POST"])])

    def throttle_next(self, n: int = 1) -> None:
        with self._lock:
            self._throttle += n

    def _throttled(self) -> bool:
        with self._lock:
            if self._throttle:
                self._throttle -= 1
                return True
        return False

    def texts(self) -> list[str]:
        """Every message as one string (text plus the text of every block), for assertions."""
        return [m["text"] + "\n" + json.dumps(m["blocks"]) for m in self.messages]

    async def webhook(self, request: Request) -> Response:
        if request.url.path != WEBHOOK_PATH:
            self.rejected.append(("webhook", "invalid_token"))
            return PlainTextResponse("invalid_token", status_code=403)
        if self._throttled():
            return PlainTextResponse("rate_limited", status_code=429, headers={"Retry-After": "1"})
        try:
            body = json.loads(await request.body())
        except ValueError:
            return PlainTextResponse("invalid_payload", status_code=400)
        if not body.get("text") and not body.get("blocks"):
            return PlainTextResponse("invalid_payload", status_code=400)
        self.messages.append({"via": "webhook", "channel": None, "text": body.get("text", ""),
                              "blocks": body.get("blocks") or [], "at": time.time()})
        return PlainTextResponse("ok")

    async def post_message(self, request: Request) -> Response:
        if self._throttled():
            return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": "1"})
        if request.headers.get("authorization") != f"Bearer {BOT_TOKEN}":
            self.rejected.append(("api", "invalid_auth"))
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(raw)
        else:
            body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            if isinstance(body.get("blocks"), str):
                body["blocks"] = json.loads(body["blocks"])
        channel = body.get("channel")
        if channel not in self.channels:
            self.rejected.append(("api", "channel_not_found"))
            return JSONResponse({"ok": False, "error": "channel_not_found"})
        if not body.get("text") and not body.get("blocks"):
            return JSONResponse({"ok": False, "error": "no_text"})
        ts = f"{time.time():.6f}"
        self.messages.append({"via": "api", "channel": channel, "text": body.get("text", ""),
                              "blocks": body.get("blocks") or [], "at": time.time()})
        return JSONResponse({"ok": True, "channel": "C0FINANCE", "ts": ts,
                             "message": {"type": "message", "text": body.get("text", ""), "ts": ts}})


@contextmanager
def running_slack() -> Iterator[SlackStandIn]:
    """A stand-in Slack served on a loopback port, its address in ``.url``."""
    from tests.support.servers import serve_app
    s = SlackStandIn()
    with serve_app(s.app) as srv:
        s.url = srv.url
        yield s
