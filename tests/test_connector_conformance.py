"""The conformance suite: what every connector found through the ``ledgerflow.connectors``
entry points must do (connectors/CONTRACT.md). A new connector is done when it passes.

Each connector is driven by a harness over its target's stand-in: the shipped ones in
tests/conformance_harnesses.py, a third-party package's through its own
``ledgerflow.conformance`` entry point. The example package under
tests/fixtures/ledgerflow_example_connector is made discoverable the way an installed
package is (a ``*.dist-info`` with its ``entry_points.txt`` on ``sys.path``) and runs
through the same checks, then receives a flow's deliveries — with no edit under runner/.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

from connectors import registry
from connectors.base import Connector, ErrorKind
from connectors.contract import ConnectorSpec, load
from tests.conformance_harnesses import SHIPPED
from tests.support.servers import serve_app

EXAMPLE = Path(__file__).parent / "fixtures" / "ledgerflow_example_connector"


def install_example(site: Path) -> None:
    """What `pip install` leaves for the example package: its code importable and a dist-info
    holding the entry points its pyproject.toml declares, in a folder on sys.path; then the
    registry discovers again."""
    import tomllib
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    dist = site / "ledgerflow_example_connector-0.1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {ref}\n" for name, ref in eps.items()) + "\n"
        for group, eps in project["entry-points"].items()))
    link = site / "ledgerflow_example_connector"
    if not link.exists():
        link.symlink_to(EXAMPLE / "ledgerflow_example_connector")
    sys.path.insert(0, str(site))
    registry.refresh()


def uninstall_example(site: Path) -> None:
    sys.path.remove(str(site))
    for name in [m for m in sys.modules if m.startswith("ledgerflow_example_connector")]:
        del sys.modules[name]
    registry.refresh()


@pytest.fixture(scope="module", autouse=True)
def example_installed(tmp_path_factory):
    site = tmp_path_factory.mktemp("site-packages")
    install_example(site)
    yield site
    uninstall_example(site)


def all_types() -> tuple[list[str], list[str]]:
    """(every registered type, the push ones)."""
    with tempfile.TemporaryDirectory() as d:
        install_example(Path(d))        # collection sees the third-party type too
        try:
            return registry.known_types(), [t for t in registry.known_types() if not registry.is_pull(t)]
        finally:
            uninstall_example(Path(d))


TYPES, PUSH_TYPES = all_types()


def harness_class(type_name: str):
    if type_name in SHIPPED:
        return SHIPPED[type_name]
    refs = registry.entry_points(group="ledgerflow.conformance")
    assert type_name in refs, (f"connector type {type_name!r} has no conformance harness: its package must "
                               "name one in the ledgerflow.conformance entry points")
    return load(refs[type_name])


@pytest.fixture
def harness(request, tmp_path):
    from runner.connector_runtime import connector_runtime
    from runner.core.secrets import SecretResolver
    from runner.store import open_store
    type_name = request.param
    saved = dict(os.environ)
    os.environ.setdefault("LEDGERFLOW_TOKEN_KEY", "Hc3zTSr0Q3yGQ9JMQq7b7-0tvmK1OD8pG0iTbbqv3nY=")
    runtime = connector_runtime(tmp_path, {"home_currency": "USD", "timezone": "UTC"}, SecretResolver(),
                                open_store(f"sqlite:///{tmp_path / 'store.db'}"))
    h = harness_class(type_name)(serve_app, runtime)
    yield h
    h.close()
    os.environ.clear()
    os.environ.update(saved)


def spec_of(h) -> ConnectorSpec:
    return registry.spec(h.type)


def needs(h, mode: str) -> None:
    if mode not in h.failures:
        pytest.skip(f"{h.type}: its target cannot fail with {mode} (see its harness)")


# ---- declarations ------------------------------------------------------------------------------

@pytest.mark.parametrize("harness", TYPES, indirect=True)
def test_config_schema_takes_a_valid_connection_and_refuses_typos(harness):
    from jsonschema import Draft202012Validator
    schema = spec_of(harness).config
    assert schema.get("additionalProperties") is False, "a connection schema must refuse unknown settings"
    validator = Draft202012Validator(schema)
    assert not list(validator.iter_errors(harness.config()))
    for key in [k for k in schema["properties"] if k != "type"]:
        typo = key[:-1] + key[-1] * 2 + "x"            # e.g. directory -> directoryyx
        errors = list(validator.iter_errors({**harness.config(), typo: "x"}))
        assert [e.validator for e in errors] == ["additionalProperties"], (key, typo)


@pytest.mark.parametrize("harness", TYPES, indirect=True)
def test_every_action_has_examples_that_pass_its_schema_and_checks(harness):
    from jsonschema import Draft202012Validator, FormatChecker
    spec = spec_of(harness)
    assert spec.actions, f"{spec.type} declares no actions"
    for name, action in spec.actions.items():
        assert action.name == name and action.examples, f"{spec.type}.{name} has no example payload"
        Draft202012Validator.check_schema(action.schema)
        validator = Draft202012Validator(action.schema, format_checker=FormatChecker())
        for example in action.examples:
            from runner.core import jsonio  # examples hold Decimals; validate them as the planner does: JSON numbers
            as_json = jsonio.loads(jsonio.dumps(example))
            assert not [e.message for e in validator.iter_errors(as_json)], (name, example)
            assert not (action.check(example) if action.check else []), (name, example)
            if spec.payload_check:
                assert not spec.payload_check(name, example, harness.config(), {"home_currency": "USD"}), name


@pytest.mark.parametrize("harness", TYPES, indirect=True)
def test_the_connector_class_is_what_the_spec_names(harness):
    spec = spec_of(harness)
    cls = spec.connector_class()
    assert issubclass(cls, Connector) and cls.type == spec.type
    assert set(cls.actions) == set(spec.actions)
    if spec.is_pull:
        assert spec.mounts, "a pull connector needs a service the target calls (ConnectorSpec.mounts)"


# ---- behaviour -------------------------------------------------------------------------------

@pytest.mark.parametrize("harness", PUSH_TYPES, indirect=True)
def test_delivers_once_and_a_replay_creates_nothing(harness):
    connector = harness.connector()
    try:
        [first] = connector.deliver([harness.item(1)])
        assert first.ok, first.error
        [again] = connector.deliver([harness.item(1)])
        assert again.ok, again.error
        assert harness.documents() == 1
    finally:
        connector.close()


@pytest.mark.parametrize("harness", PUSH_TYPES, indirect=True)
def test_lost_response_is_found_not_duplicated(harness):
    needs(harness, "lost")
    connector = harness.connector()
    try:
        with harness.failing("lost"):
            [lost] = connector.deliver([harness.item(1)])
        created = harness.documents()
        assert created == 1                              # the target did it; the answer went missing
        [retry] = connector.deliver([harness.item(1, attempts=1)])
        assert retry.ok, retry.error
        assert harness.documents() == 1
    finally:
        connector.close()


@pytest.mark.parametrize("mode,kind", [("throttled", ErrorKind.THROTTLED), ("server_error", ErrorKind.RETRYABLE),
                                       ("timeout", ErrorKind.RETRYABLE)])
@pytest.mark.parametrize("harness", PUSH_TYPES, indirect=True)
def test_throttling_server_errors_and_timeouts_are_retried(harness, mode, kind):
    needs(harness, mode)
    connector = harness.connector()
    try:
        with harness.failing(mode):
            [failed] = connector.deliver([harness.item(1)])
        assert not failed.ok and failed.error.kind == kind, failed.error
        if mode == "throttled":
            assert failed.error.retry_after is not None and failed.error.retry_after > 0
        [retry] = connector.deliver([harness.item(1, attempts=0 if mode == "throttled" else 1)])
        assert retry.ok, retry.error
        assert harness.documents() == 1
    finally:
        connector.close()


@pytest.mark.parametrize("harness", PUSH_TYPES, indirect=True)
def test_a_refusal_is_permanent_and_names_the_field(harness):
    needs(harness, "permanent")
    connector = harness.connector()
    try:
        item, field = harness.permanent_item(1)
        [out] = connector.deliver([item])
        assert not out.ok and out.error.kind == ErrorKind.PERMANENT, out.error
        assert out.error.field == field and field in str(out.error), (out.error.field, str(out.error))
        assert harness.documents() == 0
    finally:
        connector.close()


PULL_TYPES = [t for t in TYPES if t not in PUSH_TYPES]


@pytest.mark.parametrize("harness", PULL_TYPES, indirect=True)
def test_a_pull_connector_never_pushes(harness):
    connector = harness.connector()
    [out] = connector.deliver([harness.item(1)])
    assert not out.ok and out.error.kind == ErrorKind.THROTTLED     # handed back, not counted as an attempt
    assert registry.is_pull(harness.type)


@pytest.mark.parametrize("harness", PULL_TYPES, indirect=True)
def test_pulled_a_lost_answer_is_found_not_added_twice(harness):
    did = harness.enqueue(1)
    first = harness.poll(break_after=1)          # the target ran the request; its answer never came back
    assert first.broken_off and harness.documents() == 1
    harness.poll()
    row = harness.app.store.delivery(did)
    assert row["state"] == "sent" and harness.documents() == 1, row["last_error"]


@pytest.mark.parametrize("harness", PULL_TYPES, indirect=True)
def test_pulled_a_refusal_dead_letters_saying_what_was_wrong(harness):
    payload, named = harness.permanent_payload()
    did = harness.enqueue(1, payload)
    harness.poll()
    row = harness.app.store.delivery(did)
    assert row["state"] == "dead" and row["error_kind"] == "permanent" and named in row["last_error"]
    assert harness.documents() == 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("harness", TYPES, indirect=True)
def test_close_releases_what_the_connector_opened(harness):
    connector = harness.connector()
    connector.deliver([harness.item(1)])
    connector.close()                 # warm-up: lazy imports, the store's pool, the server's threads
    baseline = open_fds()
    for n in range(2, 6):
        connector = harness.connector()
        connector.deliver([harness.item(n)])
        connector.close()
    deadline = time.time() + 60
    while open_fds() > baseline and time.time() < deadline:
        time.sleep(0.2)                # the server side closes its end of each connection
    assert open_fds() <= baseline, f"{harness.type}: {open_fds() - baseline} descriptors left open after close()"


# ---- a third-party package, end to end ----------------------------------------------------------

def test_the_example_package_is_discovered_and_validated_like_a_shipped_one(tmp_path, monkeypatch, capsys):
    from runner.cli import main
    assert "example_books" in registry.known_types()
    (tmp_path / "flows").mkdir()
    (tmp_path / "ledgerflow.yaml").write_text("settings: {home_currency: USD}\nconnections:\n"
                                              "  books: {type: example_books, url: 'http://127.0.0.1:9', timout: 3}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGERFLOW_PROJECT", raising=False)
    assert main(["validate"]) == 1
    assert ("ledgerflow.yaml:3:59: connections.books: unknown setting 'timout' for a connection of type example_books: "
            "did you mean `timeout`?") in capsys.readouterr().out


FLOW = """\
name: charges-to-books
trigger: {stripe: [charge.succeeded]}
routes:
  - name: entry
    target: books
    action: entry
    mapping:
      date: "{{ charge.created | date }}"
      memo: "Stripe charge {{ charge.id }}"
      lines:
        - {account: Stripe Clearing, amount: "{{ charge.amount | money(charge.currency) }}"}
        - {account: Sales, amount: "{{ -(charge.amount | money(charge.currency)) }}"}
"""


def test_a_flow_delivers_to_the_example_package(tmp_path):
    from ledgerflow_example_connector.conformance import ExampleBooks

    from runner.app import App
    from runner.deliver.delivery import deliver_rows
    from runner.language.spec import load_project
    from tests.delivery_helpers import charge
    from tests.helpers_project import write
    books = ExampleBooks()
    with serve_app(books.app) as server:
        write(tmp_path, "ledgerflow.yaml", f"settings: {{home_currency: USD, timezone: UTC, state_dir: .state}}\n"
                                           f"connections:\n  books: {{type: example_books, url: '{server.url}'}}\n")
        write(tmp_path, "flows/charges-to-books.yaml", FLOW)
        app = App(load_project(tmp_path / "ledgerflow.yaml"))
        try:
            ev, raw = charge(1)
            app.store.add_event(ev, raw, "test")
            ids = [did for did, _ in app.store.add_deliveries(app.plan_event(ev, app.flow("charges-to-books")))]
            report = deliver_rows(app, app.store.claim("conformance", ids=ids), worker="conformance")
            assert [r["id"] for r in report.sent] == ids
            [entry] = books.entries.values()
            assert entry["reference"] == app.store.delivery(ids[0])["idempotency_key"]
            assert [line["amount"] for line in entry["lines"]] == [10.01, -10.01]
            assert app.store.delivery(ids[0])["target_ref"] == f"entry:{entry['id']}"
        finally:
            app.close()

