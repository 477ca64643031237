"""Alembic environment: run by ``runner.store.migrations.upgrade`` on the store's own
connection (inside its transaction and lock); no alembic.ini, no URL of its own."""

from __future__ import annotations

from alembic import context

from runner.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite")   # SQLite alters tables by copying
with context.begin_transaction():
    context.run_migrations()
