"""Shared fixtures.

* ``store_url``: parametrised over SQLite (a temp file) and PostgreSQL (a fresh
  database per test session on 127.0.0.1:5432, dropped at the end).
* ``prefect_api``: one project Prefect server per session (runner.operate.prefect_server; ~12 s).
* ``project``: a temporary project folder with the shipped flows and mappings.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = (ROOT.parent / "shared" / "reference" / "stripe" / "fixtures3.json")
PG_ADMIN = os.environ.get("LEDGERFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_configure(config):
    if FIXTURES.exists():
        os.environ.setdefault("LEDGERFLOW_STRIPE_FIXTURES", str(FIXTURES))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"     # never a temporary server on a random port
    os.environ.pop("LEDGERFLOW_STORE_URL", None)
    os.environ.pop("LEDGERFLOW_PROJECT", None)


# Modules that start ledgerflow processes, replay whole months of books, or fuzz: the full lane only.
SLOW_MODULES = {
    "test_books", "test_books_scenario", "test_qbo_books", "test_qbd_books", "test_sage_books", "test_file_books",
    "test_reconcile", "test_reconcile_run", "test_reconcile_slack", "test_dispatch_reconcile", "test_dispatcher",
    "test_faults", "test_prefect_resolution", "test_serve_startup", "test_hot_reload", "test_no_phone_home",
    "test_webhooks_crash", "test_webhooks_scale", "test_hostile_webhooks", "test_hostile_qbwc", "test_qbo_connect",
    "test_worker", "test_worker_sessions", "test_inbox_cli", "test_startup_imports", "test_stripe_standin_limits",
    "test_connector_conformance", "test_qbd_service", "test_qbd_qwc", "test_catchup", "test_ratelimit",
    "test_delivery_schedules", "test_reconcile_units",
}


def _lanes(item) -> set[str]:
    """The lanes a test belongs to, read from what it uses (so no test can forget its marker)."""
    lanes = set()
    if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
        lanes.add("slow")
    names = set(getattr(item, "fixturenames", ()))
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "pg_url" in names or "postgresql" in params.values():
        lanes.add("postgres")
    if "prefect_api" in names:
        lanes.add("prefect")
    return lanes


def pytest_collection_modifyitems(config, items):
    """``postgres`` and ``prefect`` markers from the fixtures each test uses; ``make test-fast``
    deselects them and ``slow`` (tests that start ledgerflow processes or fuzz). A test marked
    ``one_store`` (its body runs no SQL: a validation, a refusal before anything is stored) runs on
    SQLite only: its PostgreSQL variant would test nothing more."""
    once = [item for item in items if item.get_closest_marker("one_store") is not None
            and getattr(item, "callspec", None) is not None and item.callspec.params.get("store_url") == "postgresql"]
    if once:
        config.hook.pytest_deselected(items=once)
        items[:] = [item for item in items if item not in once]
    for item in items:
        for lane in _lanes(item) - {m.name for m in item.iter_markers()}:
            item.add_marker(getattr(pytest.mark, lane))


_SQL_STATEMENTS = [0]      # statements any engine ran (the one_store check)


def _count_statements(*_args, **_kwargs) -> None:
    _SQL_STATEMENTS[0] += 1


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A ``one_store`` test must run no SQL in its body; when it does, it fails saying so (the marker
    would otherwise skip a PostgreSQL run that tests something)."""
    if item.get_closest_marker("one_store") is None:
        return (yield)
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool
    if not event.contains(Engine, "before_cursor_execute", _count_statements):
        event.listen(Engine, "before_cursor_execute", _count_statements)
        event.listen(Pool, "checkout", _count_statements)    # a raw DBAPI cursor needs a connection too
    before = _SQL_STATEMENTS[0]
    result = yield
    ran = _SQL_STATEMENTS[0] - before
    if ran:
        raise AssertionError(f"{item.nodeid} is marked one_store but used the store ({ran} SQL statement(s) or "
                             "connection checkout(s)): it must run on PostgreSQL too; remove the marker")
    return result


@pytest.fixture(scope="session")
def stripe_fixtures() -> Path:
    if not FIXTURES.exists():
        pytest.skip(f"Stripe fixtures not found at {FIXTURES} (shared/reference is beside the checkout in CI)")
    return FIXTURES


def _pg_available() -> bool:
    try:
        import psycopg
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test session (worker), dropped afterwards."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}")
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN}")
    import psycopg
    name = f"ledgerflow_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    yield url
    from runner.store.db import _STORES
    for key in [k for k in _STORES if name in k]:
        _STORES.pop(key).close()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A store URL on each backend; PostgreSQL tables are emptied between tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = request.getfixturevalue("pg_url")
    from runner.store import open_store
    from runner.store.tables import metadata
    store = open_store(url)
    with store.engine.begin() as c:
        for t in reversed(metadata.sorted_tables):
            c.execute(t.delete())
    yield url


@pytest.fixture
def store(store_url):
    from runner.store import open_store
    return open_store(store_url)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One project Prefect server per session (per xdist worker), through the same code as every
    command (runner.operate.prefect_server): its state under a temp folder, on a free port it records (the
    next free one if another xdist worker took it meanwhile),
    a generous start-up limit; stopped at the end of the session. Its database is PostgreSQL when
    that is reachable (as the README advises for several workers: the tests run two and three worker
    processes at once, and Prefect's server on SQLite answers 503 when its database is locked)."""
    from runner.operate.prefect_server import PrefectAPI, ServerSettings
    from tests.support.servers import free_port
    database = f"ledgerflow_prefect_{uuid.uuid4().hex[:12]}" if _pg_available() else None
    if database:
        import psycopg
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
    pg_base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    settings = ServerSettings(tmp_path_factory.mktemp("prefect-project"), port=free_port(), port_fixed=False,
                              startup_limit=float(os.environ.get("LEDGERFLOW_PREFECT_STARTUP_TIMEOUT", 600)),
                              database_url=f"{pg_base}/{database}" if database else None)
    try:
        api = PrefectAPI(settings).acquire(configured=False)
        try:
            yield api.url
        finally:
            api.release()
    finally:
        if database:
            import psycopg
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def project_dir(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped project (flows, mappings, ledgerflow.yaml) in a temp folder."""
    dest = tmp_path / "project"
    dest.mkdir()
    shutil.copy(ROOT / "ledgerflow.yaml", dest / "ledgerflow.yaml")
    shutil.copytree(ROOT / "flows", dest / "flows")
    shutil.copytree(ROOT / "mappings", dest / "mappings")
    monkeypatch.chdir(dest)
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(dest / "ledgerflow.yaml"))
    return dest


@pytest.fixture
def target():
    """An HTTP target that fails on demand (tests/standins/flaky_target.py), on a loopback port."""
    from tests.standins.flaky_target import FlakyTarget
    from tests.support.servers import serve_app
    t = FlakyTarget(hang=2.0)
    with serve_app(t.app) as srv:
        t.url = srv.url
        yield t
