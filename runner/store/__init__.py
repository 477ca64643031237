"""The store: inbox, deliveries, attempts, tokens, caches. SQLAlchemy 2 Core.

SQLite (WAL) by default, PostgreSQL unchanged. A delivery row is written
before its side effect, so a crash at any point loses nothing and repeats
nothing: the idempotency key is unique, and the connector maps it to the
target's own de-duplication.
"""

from .db import Store, open_store
from .tables import metadata

__all__ = ["Store", "open_store", "metadata"]
