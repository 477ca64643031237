"""How the conformance suite (tests/test_connector_conformance.py) drives each shipped
connector against its stand-in. A third-party package ships its own harness under the
``ledgerflow.conformance`` entry points (tests/fixtures/ledgerflow_example_connector).

A harness has: ``type``; ``failures`` (which of throttled, server_error, timeout, lost,
permanent the target can produce); ``config()``, a valid connection; ``connector()``;
``item(n, attempts)``, a valid operation; ``permanent_item(n)`` -> (item the target refuses,
the field it names); ``documents()``, what the target holds; ``failing(mode)``, a context in
which the next call fails that way; ``close()``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

from connectors.base import Item


class FileHarness:
    """csv and iif: the target is a folder; a transient failure is a folder that cannot be written."""

    failures = {"server_error", "lost", "permanent"}

    def __init__(self, type_name: str, serve: Any, runtime: Any):
        self.type = type_name
        self.runtime = runtime
        self.dir = Path(runtime.project_dir) / "out" / "books"

    def config(self) -> dict:
        return {"type": self.type, "directory": "out/books"}

    def connector(self):
        from connectors import registry
        return registry.connector_class(self.type)("books", self.config(), self.runtime)

    def item(self, n: int, attempts: int = 0) -> Item:
        payload = {"date": "2026-03-02", "lines": [{"account": "Stripe Clearing", "amount": Decimal("25.00")},
                                                   {"account": "Sales", "amount": Decimal("-25.00")}]}
        if self.type == "csv":
            payload["number"] = f"ch_{n}"
        return Item(n, f"conformance:{n}", "journal", payload, attempts, created_at=1772409600.0)

    def permanent_item(self, n: int) -> tuple[Item, str]:
        item = self.item(n)
        item.payload["lines"][1]["amount"] = Decimal("-24.00")     # does not balance
        return item, "lines"

    def documents(self) -> int:
        import json
        return sum(len(json.loads(p.read_text())["keys"]) for p in self.dir.glob(".*.keys.json"))

    @contextmanager
    def failing(self, mode: str) -> Iterator[None]:
        if mode == "lost":            # written, but the outcome never reached the store
            yield
            return
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir.write_text("a file where the folder should be")
        try:
            yield
        finally:
            self.dir.unlink()

    def close(self) -> None:
        pass


class HttpHarness:
    type = "http"
    failures = {"throttled", "server_error", "timeout", "lost", "permanent"}

    def __init__(self, serve: Any, runtime: Any):
        from tests.standins.flaky_target import FlakyTarget
        self.target = FlakyTarget(hang=2.0, require=("amount",))
        self._server = serve(self.target.app)
        self.url = self._server.__enter__().url
        self.runtime = runtime

    def config(self) -> dict:
        return {"type": "http", "url": self.url + "/docs", "timeout": 0.5, "concurrency": 1}

    def connector(self):
        from connectors.http_post.connector import HttpPostConnector
        return HttpPostConnector("api", self.config(), self.runtime)

    def item(self, n: int, attempts: int = 0) -> Item:
        return Item(n, f"conformance:{n}", "post", {"charge": f"ch_{n}", "amount": Decimal("25.00")}, attempts)

    def permanent_item(self, n: int) -> tuple[Item, str]:
        item = self.item(n)
        del item.payload["amount"]
        return item, "amount"

    def documents(self) -> int:
        return self.target.created

    @contextmanager
    def failing(self, mode: str) -> Iterator[None]:
        self.target.fail_all({"throttled": "429:7", "server_error": "503", "timeout": "timeout",
                              "lost": "timeout-after-create"}[mode])
        yield

    def close(self) -> None:
        self._server.__exit__(None, None, None)


class QboHarness:
    type = "quickbooks_online"
    failures = {"throttled", "server_error", "timeout", "lost", "permanent"}

    def __init__(self, serve: Any, runtime: Any):
        from connectors.oauth import TokenSet, TokenStore
        from tests.qbo_support import CONNECTION, REALM, seed_company
        from tests.standins.qbo import QboStandin
        self.standin = QboStandin()
        self.company = self.standin.company(REALM)
        seed_company(self.company)
        ts = TokenSet.from_response(self.standin.connect(REALM))
        ts.extra["realm_id"] = REALM
        TokenStore(runtime.tokens).write(CONNECTION, ts)
        self._server = serve(self.standin.app())
        self.url = self._server.__enter__().url
        self.name = CONNECTION
        os.environ["CONFORMANCE_QBO_ID"] = self.standin.authority.client_id
        os.environ["CONFORMANCE_QBO_SECRET"] = self.standin.authority.client_secret
        self.runtime = runtime

    def config(self) -> dict:
        return {"type": "quickbooks_online", "base_url": self.url, "token_url": self.url + "/oauth2/v1/tokens/bearer",
                "client_id": {"env": "CONFORMANCE_QBO_ID"}, "client_secret": {"env": "CONFORMANCE_QBO_SECRET"},
                "multicurrency": False, "timeout": 0.5}

    def connector(self):
        from connectors.quickbooks_online.connector import QuickBooksOnlineConnector
        return QuickBooksOnlineConnector(self.name, self.config(), self.runtime)

    def item(self, n: int, attempts: int = 0) -> Item:
        from tests.qbo_support import item, receipt
        return item(n, receipt(f"ch-{n:04d}"), attempts=attempts)

    def permanent_item(self, n: int) -> tuple[Item, str]:
        item = self.item(n)
        item.payload["Line"][0].pop("Amount")            # Intuit: a required field is missing
        return item, "Line.Amount"

    def documents(self) -> int:
        return len(self.company.all("SalesReceipt"))

    @contextmanager
    def failing(self, mode: str) -> Iterator[None]:
        if mode == "lost":
            self.standin.lose.append("salesreceipt")
            yield
        elif mode == "timeout":
            self.standin.latency = 2.0
            try:
                yield
            finally:
                self.standin.latency = 0
        elif mode == "server_error":
            self.standin.inject.append(("salesreceipt", 503, {}))
            yield
        else:
            self.standin.inject.append(("salesreceipt", 429, {"Fault": {"Error": [{
                "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                "code": "3001"}], "type": "SERVICE"}}))
            yield
            self._time_passes()

    def _time_passes(self) -> None:
        """The 429's wait (Intuit sends no Retry-After here: 60 s) is over for every worker."""
        from sqlalchemy import update

        from runner.store.tables import rate_keys
        with self.runtime.limiter.store.tx() as c:
            c.execute(update(rate_keys).values(blocked_until=0))

    def close(self) -> None:
        self._server.__exit__(None, None, None)


class SageHarness:
    type = "sage"
    failures = {"throttled", "server_error", "timeout", "lost", "permanent"}

    def __init__(self, serve: Any, runtime: Any):
        from tests.standins.sage import SageStandIn
        self.standin = SageStandIn()
        self._server = serve(self.standin.app())
        self.standin.url = self._server.__enter__().url
        os.environ["SAGE_CLIENT_ID"] = self.standin.client_id
        os.environ["SAGE_CLIENT_SECRET"] = self.standin.client_secret
        self.runtime = runtime
        self._seeded = False

    def config(self) -> dict:
        from tests.standins.sage import connection_config
        return connection_config(self.standin.url, business_id=self.standin.business_id, timeout=0.5)

    def connector(self):
        from connectors.oauth import TokenSet
        from connectors.sage.connector import SageConnector
        conn = SageConnector("sage", self.config(), self.runtime)
        if not self._seeded:
            conn.client.session.save(TokenSet.from_response(self.standin.seed_tokens()))
            self._seeded = True
        return conn

    def item(self, n: int, attempts: int = 0) -> Item:
        from tests.test_sage_connector import charge
        return Item(n, f"conformance:{n}", "sales_invoice_payment", charge("25.00"), attempts)

    def permanent_item(self, n: int) -> tuple[Item, str]:
        item = self.item(n)
        item.payload["lines"][0]["ledger_account"] = "Salez"       # no such ledger account
        return item, "lines[0].ledger_account"

    def documents(self) -> int:
        return len(self.standin.records("sales_invoices"))

    @contextmanager
    def failing(self, mode: str) -> Iterator[None]:
        if mode == "lost":
            self.standin.lose_response("POST", "/sales_invoices", status=502)
        elif mode == "timeout":
            self.standin.lose_response("POST", "/sales_invoices", delay=1.5)
        else:
            self.standin.fail("POST", "/sales_invoices", 429 if mode == "throttled" else 503,
                              retry_after=7 if mode == "throttled" else None)
        yield

    def close(self) -> None:
        self._server.__exit__(None, None, None)


class QbdHarness:
    """QuickBooks Desktop is pulled by the Web Connector: its checks are pull-shaped. Work is
    queued as delivery rows; ``poll(break_after)`` runs one Web Connector session against the
    service the spec mounts (``break_after``: QuickBooks ran that many messages and the last
    answer never came back); the target is the Web Connector stand-in's company file."""

    type = "quickbooks_desktop"
    failures = {"lost", "permanent"}
    PASSWORD = "correct horse battery staple"

    def __init__(self, serve: Any, runtime: Any):
        from tests.standins.web_connector import WSDL_PATH, XSD_PATH, FakeQuickBooks
        if not (XSD_PATH.exists() and WSDL_PATH.exists()):
            import pytest
            pytest.skip(f"Intuit's qbXML schema / QBWC WSDL not found under {XSD_PATH.parents[1]}")
        self.serve = serve
        self.runtime = runtime
        self.qb = FakeQuickBooks()
        self._app = None

    def config(self) -> dict:
        return {"type": "quickbooks_desktop", "username": "ledgerflow", "password": {"env": "QBWC_PASSWORD"}}

    def connector(self):
        from connectors.quickbooks_desktop.connector import QuickBooksDesktopConnector
        return QuickBooksDesktopConnector("qbd", self.config(), self.runtime)

    def item(self, n: int, attempts: int = 0) -> Item:
        from connectors import registry
        example = registry.actions_for(self.type)["deposit"].examples[0]
        return Item(n, f"conformance:{n}", "deposit", dict(example), attempts)

    @property
    def app(self):
        if self._app is None:
            import yaml

            from runner.app import App
            from runner.language.spec import load_project
            root = Path(self.runtime.project_dir)
            (root / "flows").mkdir(exist_ok=True)
            (root / "ledgerflow.yaml").write_text(yaml.safe_dump({
                "settings": {"home_currency": "USD", "store_url": f"sqlite:///{root / 'qbd.db'}"},
                "connections": {"qbd": self.config()}}))
            os.environ["QBWC_PASSWORD"] = self.PASSWORD
            self._app = App(load_project(root / "ledgerflow.yaml"))
        return self._app

    def enqueue(self, n: int, payload: dict | None = None) -> int:
        from runner.language.planner import Operation
        item = self.item(n)
        op = Operation(flow="conformance", route="deposit", connection="qbd", connector_type=self.type,
                       action=item.action, idempotency_key=item.idempotency_key,
                       payload=payload or item.payload, event_id=f"evt_{n}")
        [(did, _)] = self.app.store.add_deliveries([op])
        return did

    def permanent_payload(self) -> tuple[dict, str]:
        payload = dict(self.item(0).payload, DepositToAccountRef={"FullName": "No Such Bank"})
        return payload, "No Such Bank"

    def poll(self, break_after: int | None = None) -> Any:
        from connectors import registry
        from connectors.contract import load
        from tests.standins.web_connector import RawSoap, WebConnector
        [mount] = registry.spec(self.type).mounts
        from runner.connector_runtime import runtime_for
        prefix, asgi = load(mount)(runtime_for(self.app))     # a mount is given the connector runtime
        with self.serve(asgi) as srv:
            return WebConnector(RawSoap(srv.url + "/"), self.qb).run_session("ledgerflow", self.PASSWORD,
                                                                             break_after=break_after)

    def documents(self) -> int:
        return len(self.qb.txns)

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


SHIPPED = {"csv": lambda serve, rt: FileHarness("csv", serve, rt), "iif": lambda serve, rt: FileHarness("iif", serve, rt),
           "http": HttpHarness, "quickbooks_online": QboHarness, "sage": SageHarness,
           "quickbooks_desktop": QbdHarness}
