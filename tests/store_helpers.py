"""Test set-up that puts a delivery straight into a state, past the store's transition checks
(runner/store/transitions.py): for scenarios that start from a given state, not for the runner."""

from __future__ import annotations

import time

from sqlalchemy import update

from runner.store.tables import deliveries


def force_state(store, delivery_id: int, state: str, **values) -> None:
    with store.tx() as c:
        c.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                  .values(state=state, updated_at=time.time(), **values))
