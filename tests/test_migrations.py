"""Store schema migrations: an existing user's database upgrades with its data; the
migration scripts and ``tables.py`` agree; several processes may open one store at once."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from runner.store import migrations
from runner.store.db import Store, make_engine
from runner.store.tables import metadata

from .conftest import PG_ADMIN

V0 = Path(__file__).parent / "fixtures" / "store_schema_v0.py"


def _v0_metadata():
    spec = importlib.util.spec_from_file_location("store_schema_v0", V0)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    """A database with nothing in it, on each backend (a PostgreSQL database of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    request.getfixturevalue("pg_url")          # skips (or fails in CI) without PostgreSQL
    import psycopg
    name = f"ledgerflow_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _engine(url: str):
    return make_engine(url)         # the store's own engine (SQLite's BEGIN IMMEDIATE hook included)


def _diff(url: str) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def test_a_database_from_before_migrations_is_upgraded_with_its_data(empty_url):
    old = _v0_metadata()
    engine = create_engine(empty_url.replace("postgresql://", "postgresql+psycopg://"))
    # the shipped release created its tables with create_all; an older install lacks the newest table
    old.create_all(engine, tables=[t for t in old.sorted_tables if t.name != "delivery_postings"])
    with engine.begin() as c:
        c.execute(text("INSERT INTO inbox (event_id, type, payload, source, received_at, status) "
                       "VALUES ('evt_old', 'charge.succeeded', '{}', 'webhook:main', 1.0, 'dispatched')"))
        c.execute(text("INSERT INTO deliveries (idempotency_key, event_id, flow, route, connection, connector_type,"
                       " action, payload, state, attempts, max_attempts, next_attempt_at, created_at, updated_at,"
                       " target_ref) VALUES ('k1', 'evt_old', 'f', 'r', 'qbo', 'quickbooks_online', 'create_x',"
                       " '{}', 'sent', 1, 6, 0, 1, 1, 'QB-7')"))
    engine.dispose()

    store = Store(empty_url)
    try:
        assert store.get_event("evt_old")["status"] == "dispatched"
        assert "delivery_postings" in inspect(store.engine).get_table_names()
        with store.engine.connect() as c:
            assert migrations.current_revision(c) == migrations.HEAD
            assert c.execute(text("SELECT target_ref FROM deliveries WHERE idempotency_key = 'k1'")).scalar() == "QB-7"
    finally:
        store.close()
    assert _diff(empty_url) == []
    assert migrations.upgrade(_engine(empty_url)) == "current"


def test_the_migration_scripts_build_exactly_the_tables_the_code_declares(empty_url):
    """Replaying every script on an empty database gives tables.py (a new column without a
    migration fails here)."""
    from alembic import command
    engine = _engine(empty_url)
    with engine.begin() as conn:
        command.upgrade(migrations.config(conn), "head")
    engine.dispose()
    assert _diff(empty_url) == []


def test_a_new_database_is_created_at_head(empty_url):
    assert migrations.upgrade(_engine(empty_url)) == "created"
    assert _diff(empty_url) == []
    assert migrations.upgrade(_engine(empty_url)) == "current"


def test_head_is_the_newest_script():
    from alembic.script import ScriptDirectory
    assert ScriptDirectory.from_config(migrations.config()).get_current_head() == migrations.HEAD


def test_processes_opening_one_new_store_at_once_migrate_it_once(empty_url):
    results, errors = [], []

    def open_one():
        try:
            results.append(migrations.upgrade(_engine(empty_url)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(results) == ["created", "current", "current", "current"]
