"""A Prefect API outage on demand: an ASGI proxy in front of the real test API that answers
503 while ``down`` (as a load balancer does while the server restarts), and forwards
every HTTP request otherwise. WebSockets (Prefect's event stream) are refused; Prefect's
clients fall back without them."""

from __future__ import annotations

import threading

import httpx


class OutageProxy:
    def __init__(self, upstream: str, *, down: bool = True):
        self.upstream = upstream.rstrip("/")
        self.down = threading.Event()
        if down:
            self.down.set()
        self.refused = 0
        self.forwarded = 0
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1013})
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if self.down.is_set():
            self.refused += 1
            await self._answer(send, 503, [(b"content-type", b"application/json")],
                               b'{"detail": "Service Unavailable (test outage)"}')
            return
        self.forwarded += 1
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=60)
        # the proxy's own path prefix is /api, as the real server's is
        url = self.upstream + scope["path"].removeprefix("/api")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"host", b"content-length")]
        resp = await self._client.request(scope["method"], url, headers=headers, content=body)
        out = [(k.encode(), v.encode()) for k, v in resp.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection")]
        await self._answer(send, resp.status_code, out, resp.content)

    @staticmethod
    async def _answer(send, status: int, headers: list, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
