"""Shared set-up for the QuickBooks Online tests: a running stand-in with a seeded
company, tokens in the store, and a connector pointed at it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from cryptography.fernet import Fernet

from connectors.base import Item
from connectors.oauth import TokenSet, TokenStore
from runner.connector_runtime import connector_runtime
from runner.core.secrets import SecretResolver
from runner.store import open_store
from runner.store.tokens import TokenRows
from tests.standins.qbo import Company, QboStandin
from tests.support.servers import serve_app

REALM = "9130350000000001"
CONNECTION = "quickbooks_online"
ACCOUNTS = {"Stripe Clearing": "Bank", "Operating Bank": "Bank", "Sales": "Income", "Stripe Fees": "Expense",
            "Chargebacks": "Expense", "Sales Refunds": "Income"}


@dataclass
class QboEnv:
    standin: QboStandin
    company: Company
    url: str
    store: Any
    store_url: str

    def config(self, **over: Any) -> dict:
        return {"type": "quickbooks_online", "base_url": self.url,
                "token_url": self.url + "/oauth2/v1/tokens/bearer",
                "client_id": {"env": "QBO_CLIENT_ID"}, "client_secret": {"env": "QBO_CLIENT_SECRET"},
                "multicurrency": False, **over}

    def connector(self, **over: Any):
        from connectors.quickbooks_online.connector import QuickBooksOnlineConnector
        runtime = connector_runtime(".", {"home_currency": "USD"}, SecretResolver(), self.store)
        return QuickBooksOnlineConnector(CONNECTION, self.config(**over), runtime)


def seed_company(co: Company) -> None:
    for name, kind in ACCOUNTS.items():
        co.seed_account(name, kind)
    co.seed_named("Item", "Stripe Sales")
    co.seed_named("Item", "Application Fees")
    co.seed_named("Vendor", "Stripe")


@pytest.fixture
def qbo(store_url, monkeypatch) -> QboEnv:
    monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", Fernet.generate_key().decode())
    standin = QboStandin()
    monkeypatch.setenv("QBO_CLIENT_ID", standin.authority.client_id)
    monkeypatch.setenv("QBO_CLIENT_SECRET", standin.authority.client_secret)
    co = standin.company(REALM)
    seed_company(co)
    store = open_store(store_url)
    ts = TokenSet.from_response(standin.connect(REALM))
    ts.extra["realm_id"] = REALM
    TokenStore(TokenRows(store)).write(CONNECTION, ts)
    with serve_app(standin.app()) as srv:
        yield QboEnv(standin, co, srv.url, store, store_url)


def receipt(docnumber: str, amount: str = "12.50", **over: Any) -> dict:
    return {"DocNumber": docnumber, "TxnDate": "2024-05-01", "PrivateNote": f"Stripe charge {docnumber}",
            "CurrencyRef": {"value": "USD"}, "CustomerRef": {"name": "Stripe Customers"},
            "DepositToAccountRef": {"name": "Stripe Clearing"},
            "Line": [{"Amount": Decimal(amount), "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"name": "Stripe Sales"}}}], **over}


def item(i: int, payload: dict, action: str = "sales_receipt", attempts: int = 0, key: str | None = None) -> Item:
    return Item(delivery_id=i, idempotency_key=key or f"qbo-charge:ch_{i:06d}", action=action, payload=payload,
                attempts=attempts)
