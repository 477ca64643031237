"""A target's API limits, held across workers with Prefect global concurrency limits.

A connection may declare, in ledgerflow.yaml::

    max_in_flight: 4      # connector calls at once, across every worker
    rate_limit: 8         # operations per second, across every worker
    batch_size: 50        # operations per connector call (default 100)

Each becomes a global concurrency limit named after the connection
(``ledgerflow-<connection>`` and ``ledgerflow-<connection>-rate``), visible and
adjustable under *Concurrency* in the Prefect UI. Connectors with finer limits
of their own (per realm, per company) apply them inside ``deliver``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping


def limit_names(connection: str) -> tuple[str, str]:
    return f"ledgerflow-{connection}", f"ledgerflow-{connection}-rate"


def call_size(config: Mapping[str, Any]) -> int:
    """Operations per connector call: the batch size, never above the per-second rate."""
    size = int(config.get("batch_size", 100))
    if config.get("rate_limit"):
        size = min(size, int(config["rate_limit"]))
    return max(1, size)


def ensure_limits(app) -> list[str]:
    """Create or update the Prefect limits the connections declare; return their names."""
    wanted = []
    for name, cfg in app.project.connections.items():
        conc, rate = limit_names(name)
        if cfg.get("max_in_flight"):
            wanted.append((conc, int(cfg["max_in_flight"]), None))
        if cfg.get("rate_limit"):
            wanted.append((rate, int(cfg["rate_limit"]), float(cfg["rate_limit"])))
    if not wanted:
        return []
    from prefect.client.orchestration import get_client
    with get_client(sync_client=True) as client:
        for name, limit, decay in wanted:   # creates, or updates a limit whose values changed
            client.upsert_global_concurrency_limit_by_name(name, limit, slot_decay_per_second=decay)
    return [w[0] for w in wanted]


@contextmanager
def target_limits(app, connection: str, operations: int) -> Iterator[None]:
    """Hold the connection's limits around one connector call of ``operations`` items."""
    cfg = app.project.connections.get(connection, {})
    conc, rate = limit_names(connection)
    if cfg.get("rate_limit"):
        from prefect.concurrency.sync import rate_limit
        rate_limit(rate, occupy=min(operations, int(cfg["rate_limit"])), strict=False)
    if cfg.get("max_in_flight"):
        from prefect.concurrency.sync import concurrency
        with concurrency(conc, occupy=1, strict=False):
            yield
        return
    yield
