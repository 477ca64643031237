"""Extension points for ``ledgerflow serve``, so features plug in without
editing each other's modules.

* ``ASGI_MOUNTS``: ``"module:function"`` strings; each function takes the
  ``App`` and returns ``(path_prefix, asgi_app)`` to mount (the Web Connector
  SOAP service, say).
* ``BACKGROUND``: ``"module:function"`` strings; each function takes the
  ``App`` and returns an object with ``start()`` and ``stop()`` (the delivery
  loop, the catch-up schedule, ...), started after the HTTP server is up.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

ASGI_MOUNTS: list[str] = [
    "connectors.quickbooks_desktop.service:mount",   # QuickBooks Web Connector SOAP service at /qbwc
]
BACKGROUND: list[str] = [
    "runner.prefect_server:background",   # embedded Prefect server (UI, schedules) unless PREFECT_API_URL is set
    "runner.dispatch:background",     # pending inbox events -> delivery rows
    "runner.catchup:background",      # scheduled Stripe catch-up (when stripe.api_key is set)
    "runner.worker:background",           # the delivery loop: batches in Prefect flow runs
    "runner.deployments:background",      # runs scheduled flows (deployments) and runs started from the UI
]


def load(ref: str) -> Callable[..., Any]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)
