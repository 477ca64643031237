"""Schema migrations (Alembic): every store is brought to ``HEAD`` when it opens.

* A new, empty database gets ``tables.metadata`` created at once and is stamped
  ``HEAD`` (Alembic's documented way to start a database: replaying every
  migration buys nothing on an empty one).
* A database at an older revision, or one made by a ledgerflow from before
  migrations (no ``alembic_version`` table), is upgraded through the scripts in
  ``versions/``, data kept.
* A database at the current revision costs one ``SELECT`` and no Alembic import; a new
  one is stamped without Alembic too (the same table and row Alembic writes).

Several processes may open one store at once: the check and the upgrade run in
one transaction that holds PostgreSQL's advisory lock (SQLite: ``BEGIN
IMMEDIATE``), so exactly one of them migrates and the others find ``HEAD``.

A new migration: change ``tables.py``, then ``python -m runner.store.migrations
revision "what changed"`` writes the script from the difference (check it by
hand), and ``HEAD`` below is set to its revision; ``tests/test_migrations.py``
fails until the scripts and ``tables.py`` agree.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

HEAD = "0001"
HERE = Path(__file__).resolve().parent
_LOCK_ID = 0x1ED6E7F10          # pg_advisory_xact_lock key: "ledgerflow migrations"


def config(connection: Connection | None = None):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(conn: Connection) -> str | None:
    """The stamped revision, read with one SELECT (importing Alembic costs about a second of CPU
    at every start of serve and of each command; it is imported only to migrate)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) <= 1:
        return rows[0] if rows else None
    from alembic.runtime.migration import MigrationContext  # several heads: Alembic says what is wrong
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the store's schema to ``HEAD``; what was done: "current", "created" or "upgraded".

    SQLite: processes opening a brand-new file at once race to switch it to WAL, which SQLite
    refuses at once ("database is locked") instead of waiting; the loser tries again."""
    import time

    from sqlalchemy.exc import OperationalError
    deadline = time.monotonic() + 60
    while True:
        try:
            return _upgrade(engine)
        except OperationalError as exc:
            if engine.dialect.name != "sqlite" or "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            engine.dispose()
            time.sleep(0.1)


def _upgrade(engine: Engine) -> str:
    from runner.store import tables
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.info["begin_sql"] = "BEGIN IMMEDIATE"        # see db.make_engine's begin hook
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
            revision = current_revision(conn)
            if revision == HEAD:
                return "current"
            if revision is None and not inspect(conn).get_table_names():
                tables.metadata.create_all(conn)
                _stamp(conn, HEAD)
                return "created"
            from alembic import command
            command.upgrade(config(conn), "head")
            return "upgraded"


def _stamp(conn: Connection, revision: str) -> None:
    """What Alembic's ``stamp`` writes on a new database (its version table, one row), without
    importing Alembic: a new store is opened by serve's receiver before its port is open."""
    conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                      "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:rev)"), {"rev": revision})


def main(argv: list[str] | None = None) -> int:
    """``python -m runner.store.migrations revision "message"``: a new script from tables.py's changes."""
    import sys

    from alembic import command
    from sqlalchemy import create_engine
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "revision":
        print('usage: python -m runner.store.migrations revision "what changed"', file=sys.stderr)
        return 2
    engine = create_engine("sqlite://")
    with engine.begin() as conn:                 # an empty database at HEAD, compared with tables.py
        cfg = config(conn)
        command.upgrade(cfg, "head")
        command.revision(cfg, message=args[1], autogenerate=True)
    return 0
