"""Connection and request limits of ``ledgerflow serve``, and where the Web Connector listens.

```yaml
serve:
  host: 127.0.0.1
  port: 8000
  limits:
    max_connections: 1000       # open connections + requests in progress; beyond it new requests get 503
    header_timeout: 10          # seconds for a request line and its headers to arrive (then 408 and closed)
    body_timeout: 30            # seconds for a whole request body to arrive (then 408)
    keep_alive_timeout: 5       # seconds an idle keep-alive connection stays open
    max_header_bytes: 65536     # request line + headers; larger gets 400
  qbwc:                         # the Web Connector (/qbwc) on its own listener (default: beside the webhooks)
    host: 192.168.1.20
    port: 8443
```

The header timeout is enforced by ``guarded_h11`` (uvicorn's h11 protocol with
a timer from connection start, and again after each response, until the next
request's headers are in); uvicorn itself only times out *idle* keep-alive
connections. The body timeout is enforced by ``read_body`` in our ASGI code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# the request-body helpers are shared with the connectors' services (connectors/asgi.py)
from connectors.asgi import DEFAULT_BODY_TIMEOUT, BodyTimeout, BodyTooLarge, Disconnected, declared_length, read_body

__all__ = ["DEFAULTS", "Limits", "Listener", "serve_settings", "guarded_h11", "BodyTimeout", "BodyTooLarge",
           "Disconnected", "read_body", "declared_length"]

DEFAULTS = {"max_connections": 1000, "header_timeout": 10.0, "body_timeout": DEFAULT_BODY_TIMEOUT, "keep_alive_timeout": 5.0,
            "max_header_bytes": 64 * 1024}


@dataclass(frozen=True)
class Limits:
    max_connections: int = DEFAULTS["max_connections"]
    header_timeout: float = DEFAULTS["header_timeout"]
    body_timeout: float = DEFAULTS["body_timeout"]
    keep_alive_timeout: float = DEFAULTS["keep_alive_timeout"]
    max_header_bytes: int = DEFAULTS["max_header_bytes"]

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> "Limits":
        raw = raw or {}
        return cls(**{k: type(v)(raw[k]) if k in raw else v for k, v in DEFAULTS.items()})

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config`` / ``uvicorn.run``."""
        # ws="none": nothing here speaks WebSocket, and uvicorn's "auto" imports the websockets package
        return {"http": guarded_h11(self.header_timeout), "ws": "none", "limit_concurrency": self.max_connections,
                "timeout_keep_alive": max(1, int(round(self.keep_alive_timeout))),
                "h11_max_incomplete_event_size": self.max_header_bytes}


@dataclass(frozen=True)
class Listener:
    host: str
    port: int


def serve_settings(raw_serve: Mapping[str, Any] | None) -> tuple[Limits, Listener | None]:
    """(limits, the Web Connector's own listener or None) from the ``serve:`` mapping."""
    raw_serve = raw_serve or {}
    limits = Limits.from_config(raw_serve.get("limits"))
    q = raw_serve.get("qbwc") or None
    listener = None
    if q and q.get("port"):
        listener = Listener(str(q.get("host") or "127.0.0.1"), int(q["port"]))
    return limits, listener


_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                     b"content-length: 41\r\n\r\nrequest headers not received in time (408)")


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request line and headers."""

    header_timeout: float = DEFAULTS["header_timeout"]
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
            self._disarm()         # the headers are in: the body has its own deadline (read_body)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.SEND_BODY:
            self.transport.close()  # answered (408/413/400) before its body ended: nothing more is read from it
        elif self.conn.their_state is h11.IDLE:
            self._arm()            # the next request's headers must arrive in time too

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is None or self.cycle.response_complete:
            try:
                self.transport.write(_TIMEOUT_RESPONSE)
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass
        self.transport.close()


def guarded_h11(header_timeout: float) -> type:
    return type("GuardedH11Protocol", (_GuardedH11,), {"header_timeout": float(header_timeout)})
