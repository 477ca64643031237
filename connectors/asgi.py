"""Generic ASGI helpers for a connector's HTTP service (the Web Connector's /qbwc) and for
``ledgerflow serve`` (runner/operate/server): a request body read with a size cap and a deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Mapping

DEFAULT_BODY_TIMEOUT = 30.0     # seconds for a whole request body to arrive (serve.limits.body_timeout)


class BodyTimeout(Exception):
    pass


class BodyTooLarge(Exception):
    pass


class Disconnected(Exception):
    pass


async def read_body(receive, max_bytes: int, timeout: float) -> bytes:
    """The request body, streamed with a size cap and an overall deadline (no more is read past either).

    One timer for the whole body that cancels this task when it fires (what ``asyncio.timeout``
    does, at a third of its cost per request), not a task and a timer per chunk."""
    task = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    loop = asyncio.get_running_loop()
    timer = loop.call_at(loop.time() + timeout, expire)
    chunks, size = [], 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge()
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except asyncio.CancelledError:
        if expired and task.uncancel() == 0:      # our deadline, not a shutdown: a 408
            raise BodyTimeout() from None
        raise
    finally:
        timer.cancel()


def declared_length(headers) -> int | None:
    """Content-Length as an int (None when absent or not a plain number)."""
    for k, v in headers:
        if k == b"content-length":
            return int(v) if v.isdigit() else None
    return None


@dataclass(frozen=True)
class BodyLimits:
    """The part of ``serve.limits`` a connector's service applies itself (``runner.operate.server.limits.Limits``
    has the same ``body_timeout``)."""

    body_timeout: float = DEFAULT_BODY_TIMEOUT

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> "BodyLimits":
        raw = raw or {}
        return cls(float(raw["body_timeout"]) if "body_timeout" in raw else DEFAULT_BODY_TIMEOUT)
