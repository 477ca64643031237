"""The store: inbox, deliveries, attempts, tokens, caches. SQLAlchemy 2 Core.

SQLite (WAL) by default, PostgreSQL unchanged. A delivery row is written
before its side effect, so a crash at any point loses nothing and repeats
nothing: the idempotency key is unique, and the connector maps it to the
target's own de-duplication.

Only this package runs SQL on the store's tables (tests/test_store_model.py checks that no
module outside it imports ``tables``): a delivery is read as a ``Delivery`` (model.py) and its
state changes only through ``Store`` methods that transitions.py checks; the Web Connector,
alert grouping, the rate limiter, the FX cache and reconciliation have their own modules here.
"""

from runner.store.db import Store, open_store
from runner.store.model import Delivery, State
from runner.store.tables import metadata
from runner.store.transitions import IllegalTransition

__all__ = ["Store", "open_store", "metadata", "Delivery", "State", "IllegalTransition"]
