"""The connector contract as the runner reads it: types found through the
``ledgerflow.connectors`` entry points, connection settings checked against each
connector's own schema at ``validate``, ``ledgerflow connect`` systems, service
mounts and reconciliation defaults read from the connectors' declarations."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

from connectors import registry
from runner.cli import main
from runner.core.errors import LedgerflowError

ROOT = Path(__file__).resolve().parent.parent

PROJECT = """\
settings:
  home_currency: USD
connections:
  qbo:
    type: quickbooks_online
    enviroment: production
    client_id: {env: QBO_CLIENT_ID}
    client_secret: {env: QBO_CLIENT_SECRET}
  books:
    type: csv
    directroy: out/books
  api:
    type: http
    url: https://example.com/hooks
    timeout: soon
  files:
    type: iff
"""


def test_discovery_finds_what_importlib_metadata_finds():
    found = registry.entry_points()
    expected = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=registry.GROUP)}
    assert found == expected
    assert {"csv", "iif", "http", "quickbooks_online", "quickbooks_desktop", "sage"} <= set(found)
    assert registry.known_types() == sorted(found)


def test_validate_rejects_unknown_connection_settings_with_the_nearest_name(tmp_path, monkeypatch, capsys):
    (tmp_path / "ledgerflow.yaml").write_text(PROJECT)
    (tmp_path / "flows").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGERFLOW_PROJECT", raising=False)
    assert main(["validate"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert ("ledgerflow.yaml:6:5: connections.qbo: unknown setting 'enviroment' for a connection of type quickbooks_online"
            ": did you mean `environment`?") in out
    assert ("ledgerflow.yaml:11:5: connections.books: unknown setting 'directroy' for a connection of type csv: "
            "did you mean `directory`?") in out
    assert any(line.startswith("ledgerflow.yaml:15:14: connections.api.timeout: 'soon' is not of type 'number'")
               for line in out), out
    assert any(line.startswith("ledgerflow.yaml:17:11: connections.files.type: unknown connector type 'iff' "
                               "(did you mean `iif`?") for line in out), out


def test_every_shipped_connection_schema_has_a_fresh_compiled_validator():
    """validate pays no schema compile for the shipped connectors (scripts/compile_schemas.py)."""
    from runner.language import schemacheck
    spec = importlib.util.spec_from_file_location("compile_schemas", ROOT / "scripts" / "compile_schemas.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for module, schema in mod.shipped_connection_schemas().items():
        generated = ROOT / "runner" / "language" / "_schema_validators" / f"{module}.py"
        assert generated.exists() and schemacheck._generated(schema) is not None, (
            f"{generated.relative_to(ROOT)} is stale: run .venv/bin/python scripts/compile_schemas.py")


def test_connect_systems_come_from_the_connectors():
    from runner.cli.commands.connect import provider_for
    assert provider_for("sage")[0] == "sage"
    assert provider_for("quickbooks-online")[0] == "quickbooks_online"
    with pytest.raises(LedgerflowError, match="did you mean `quickbooks-online`"):
        provider_for("quickbooks-onlin")


def test_mounts_pull_types_and_reconciliation_defaults_come_from_the_connectors():
    from runner.operate import serve_hooks
    from runner.reconcile.policy import Policy
    assert serve_hooks.ASGI_MOUNTS == ["connectors.quickbooks_desktop.service:mount"] == registry.mounts()
    assert registry.PULL_TYPES == {"quickbooks_desktop"}
    booked = Policy(flow="f").booked_amount
    assert booked["csv.row"] == {"amount": "amount", "currency": "currency", "rate": "exchange_rate"}
    assert booked["quickbooks_online.journal_entry"]["amount"] == "Line[0].Amount"
    assert booked["iif.transfer"] == {"amount": "amount"}


def test_without_registered_connectors_validate_says_how_to_register_them(tmp_path, monkeypatch, capsys):
    """A checkout used without `pip install -e .` has no entry points: say so, not just 'unknown type'."""
    monkeypatch.setattr(registry, "TYPES", {})
    (tmp_path / "ledgerflow.yaml").write_text("settings: {home_currency: USD}\nconnections:\n  books: {type: csv}\n")
    (tmp_path / "flows").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGERFLOW_PROJECT", raising=False)
    assert main(["validate"]) == 1
    assert "known: none: is ledgerflow installed? `pip install -e .` registers the shipped connectors" \
        in capsys.readouterr().out


def test_connectors_import_nothing_from_the_runner():
    """Connectors depend on the runtime the runner injects (connectors.base.Runtime), never on the runner:
    no import of ``runner`` anywhere under connectors/, at module level, inside a function or under
    TYPE_CHECKING (grimp sees all three)."""
    import grimp
    graph = grimp.build_graph("connectors", "runner")
    found = sorted(f"{importer} -> {imported}" for importer in graph.find_descendants("connectors") | {"connectors"}
                   for imported in graph.find_modules_directly_imported_by(importer)
                   if imported == "runner" or imported.startswith("runner."))
    assert found == []


def test_connector_errors_are_the_runners_errors():
    """A connector's configuration error reaches the CLI's ``except LedgerflowError`` unchanged."""
    import connectors.base
    import runner.store.limiter
    from connectors.oauth import OAuthConfig
    assert LedgerflowError is connectors.base.LedgerflowError
    assert runner.store.limiter.Limit is connectors.base.Limit
    assert issubclass(runner.store.limiter.RateLimitTimeout, LedgerflowError)
    with pytest.raises(LedgerflowError, match=r"^connections\.qbo\.token_url is required for OAuth 2$"):
        OAuthConfig.from_connection("qbo", {}, None)


def test_a_connector_is_handed_services_never_the_store(tmp_path):
    """The runtime carries the store's services (cache, limiter, token rows, the Web Connector's
    queue) and the project's connections and serve section for mounts, not the store or the App;
    a connector module given something else than the token rows says so."""
    import dataclasses

    import pytest

    from connectors.base import Runtime
    from connectors.oauth import TokenStore
    from runner.connector_runtime import connector_runtime
    from runner.store import open_store
    assert "store" not in {f.name for f in dataclasses.fields(Runtime)}
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    runtime = connector_runtime(tmp_path, {}, None, store, connections={"q": {"type": "quickbooks_desktop"}},
                                serve={"qbwc": {"port": 8443}})
    assert all(getattr(runtime, name) is not None for name in ("cache", "limiter", "tokens", "qbwc"))
    assert runtime.connections["q"]["type"] == "quickbooks_desktop" and runtime.serve["qbwc"]["port"] == 8443
    with pytest.raises(TypeError, match=r"expected the runtime's token rows \(Runtime.tokens\), got Store"):
        TokenStore(store)
