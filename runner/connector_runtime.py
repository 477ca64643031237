"""What the runner hands a connector (``connectors.base.Runtime``, connectors/CONTRACT.md): the
services over its store, built here so that no module under connectors/ imports the runner."""

from __future__ import annotations

from typing import Any

from connectors.base import Runtime


def connector_runtime(project_dir: Any, settings: Any, secrets: Any = None, store: Any = None, *,
                      connections: Any = None, serve: Any = None) -> Runtime:
    """A connector's runtime: the key/value cache, rate limiter, OAuth token rows and Web Connector
    queue over ``store`` (each None without one), and the project's connections and serve section."""
    runtime = Runtime(project_dir=project_dir, settings=settings, secrets=secrets, connections=connections or {},
                      serve=serve or {})
    if store is not None:
        from runner.qbwc_queue import QbwcQueue
        from runner.store.kvcache import KeyValueCache
        from runner.store.limiter import RateLimiter
        from runner.store.tokens import TokenRows
        runtime.cache, runtime.limiter = KeyValueCache(store), RateLimiter(store)
        runtime.tokens, runtime.qbwc = TokenRows(store), QbwcQueue(store)
    return runtime


def runtime_for(app: Any) -> Runtime:
    """The runtime over a loaded project (``runner.app.App``): its store's services, its
    connections and ``serve`` section (for the services connectors mount in ``ledgerflow serve``)."""
    project = app.project
    return connector_runtime(project.dir, project.settings, app.secrets, app.store,
                             connections=project.connections, serve=project.raw.get("serve") or {})
