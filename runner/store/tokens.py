"""The ``oauth_tokens`` table's SQL (``connectors.oauth.TokenStore`` encrypts and decrypts;
this module only keeps ciphertext and versions), so no connector runs SQL on the store."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import delete, select, update

from runner.store.tables import tokens

REFRESH_HOLD = 600.0     # seconds an OAuth refresh may hold its row while the token endpoint answers


class TokenRows:
    """One row per connection: ciphertext and a version that grows with each write."""

    def __init__(self, store: Any):
        self.store = store

    @contextmanager
    def locked(self) -> Iterator[Any]:
        """A write transaction (SQLite: BEGIN IMMEDIATE) for read-with-lock, then write. A refresh waits
        for the token endpoint inside it (each phase of the request has its own timeout, a minute or
        more in all), so it may sit idle longer than the store's default allows: ending it then would
        lose a refresh token the provider has already rotated."""
        with self.store.tx(immediate=True, idle_limit=REFRESH_HOLD) as conn:
            yield conn

    def read(self, connection: str, conn: Any = None, *, lock: bool = False) -> tuple[bytes, int] | None:
        """(ciphertext, version), or None. ``lock`` adds FOR UPDATE (PostgreSQL)."""
        q = select(tokens.c.ciphertext, tokens.c.version).where(tokens.c.connection == connection)
        if lock:
            q = q.with_for_update()
        if conn is None:
            with self.store.engine.connect() as c:
                row = c.execute(q).first()
        else:
            row = conn.execute(q).first()
        return None if row is None else (bytes(row[0]), row[1])

    def write(self, connection: str, blob: bytes, conn: Any = None) -> int:
        """Insert or replace; the new version."""
        if conn is None:
            with self.locked() as c:
                return self.write(connection, blob, c)
        now = time.time()
        current = conn.execute(select(tokens.c.version).where(tokens.c.connection == connection)
                               .with_for_update()).scalar()
        if current is None:
            conn.execute(tokens.insert().values(connection=connection, ciphertext=blob, version=1, updated_at=now))
            return 1
        conn.execute(update(tokens).where(tokens.c.connection == connection)
                     .values(ciphertext=blob, version=current + 1, updated_at=now))
        return current + 1

    def delete(self, connection: str) -> None:
        with self.locked() as c:
            c.execute(delete(tokens).where(tokens.c.connection == connection))
