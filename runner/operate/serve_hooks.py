"""Extension points for ``ledgerflow serve``, so features plug in without
editing each other's modules.

* ``ASGI_MOUNTS``: ``"module:function"`` strings; each function takes the
  connector runtime (``connectors.base.Runtime``, built by runner/connector_runtime.py
  ``runtime_for``) and returns ``(path_prefix, asgi_app)`` to mount (the Web Connector
  SOAP service, say). Connectors declare theirs (``ConnectorSpec.mounts``).
* ``BACKGROUND``: ``"module:function"`` strings; each function takes the
  ``App`` and returns an object with ``start()`` and ``stop()`` (the delivery
  loop, the catch-up schedule, ...), started one by one after the HTTP server
  is up, each one's state in ``/healthz`` (``runner.operate.server.supervisor``). A
  service may have ``problem()`` (a reason when it has stopped working) or a
  ``_thread``; either going wrong marks it failed.
* ``NEEDS_PREFECT``: the BACKGROUND entries that run Prefect flows; they are not
  started when the Prefect API could not be had.
* ``NEEDS_FLOWS``: the BACKGROUND entries that plan with the project's flows; they
  wait while the flows do not load (a broken file), and start once a fix is taken.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from connectors import registry

# the services the connectors declare (ConnectorSpec.mounts): the QuickBooks Web Connector at /qbwc
ASGI_MOUNTS: list[str] = registry.mounts()
BACKGROUND: list[str] = [
    "runner.operate.reload:background",           # hot reload: changed flows, mappings, ledgerflow.yaml (first: cheap)
    "runner.operate.prefect_server:background",   # the project's Prefect server (UI, schedules) unless PREFECT_API_URL is set
    "runner.ingest.dispatch:background",          # pending inbox events -> delivery rows
    "runner.ingest.catchup:background",           # scheduled Stripe catch-up (when stripe.api_key is set)
    "runner.deliver.worker:background",           # the delivery loop: batches in Prefect flow runs
    "runner.operate.deployments:background",      # runs scheduled flows (deployments) and runs started from the UI
]
NEEDS_PREFECT: set[str] = {"runner.deliver.worker:background", "runner.operate.deployments:background"}
NEEDS_FLOWS: set[str] = {"runner.ingest.dispatch:background", "runner.operate.deployments:background"}


def load(ref: str) -> Callable[..., Any]:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)
