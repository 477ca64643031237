"""Slack alert grouping's store operations (runner/deliver/alerts.py decides what to send; this counts).

One ``alert_groups`` row per flow + target + error signature: identical failures within a window
are counted, not sent again; a window that closed with unreported failures is flushed once, by
whichever worker marks it reported first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, select, update

from runner.store.db import Store, _insert
from runner.store.tables import alert_groups as G


def count(store: Store, key: str, first: dict[str, Any], last: dict[str, Any], now: float) -> tuple[int, int] | None:
    """Count one occurrence of group ``key``: (count, earlier-unreported) when a message should go now,
    else None. ``first`` holds kind, flow, target, error and window (seconds) for a new window;
    ``last`` the last_* ids of this occurrence."""
    last = {**last, "updated_at": now}
    with store.tx(immediate=True) as c:
        q = select(G).where(G.c.group_key == key)
        if store.dialect == "postgresql":
            q = q.with_for_update()
        row = c.execute(q).mappings().first()
        if row is None:
            c.execute(_insert(store.engine, G).values(
                group_key=key, kind=first["kind"], flow=first["flow"], target=first["target"], error=first["error"],
                window_start=now, window_seconds=first["window"], count=1, reported=1, **last)
                .on_conflict_do_nothing(index_elements=["group_key"]))
            row = c.execute(q).mappings().first()
            if row["count"] == 1 and row["window_start"] == now:
                return 1, 0
        if now >= row["window_start"] + row["window_seconds"]:
            earlier = row["count"] - row["reported"]
            c.execute(update(G).where(G.c.group_key == key).values(
                window_start=now, window_seconds=first["window"], count=1, reported=1, error=first["error"], **last))
            return 1, earlier
        c.execute(update(G).where(G.c.group_key == key).values(count=G.c.count + 1, **last))
        return None


def closed_unreported(store: Store, now: float) -> list[dict]:
    """Groups whose window closed with occurrences not yet in a sent message."""
    with store.engine.connect() as c:
        return [dict(r) for r in c.execute(select(G).where(and_(
            G.c.count > G.c.reported, G.c.window_start + G.c.window_seconds <= now))).mappings()]


def mark_reported(store: Store, row: dict, now: float) -> bool:
    """Mark ``row``'s occurrences reported, if nobody did meanwhile and none arrived; True when so."""
    with store.tx(immediate=True) as c:
        return c.execute(update(G).where(and_(
            G.c.group_key == row["group_key"], G.c.count == row["count"], G.c.reported == row["reported"]))
            .values(reported=row["count"], updated_at=now)).rowcount == 1
