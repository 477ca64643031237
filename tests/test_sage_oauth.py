"""Sage's rotating refresh tokens: one refresh for many workers, the new token saved first."""

from __future__ import annotations

import threading

import pytest
from cryptography.fernet import Fernet

from connectors.base import Item, Runtime
from connectors.oauth import TokenSet, TokenStore
from connectors.sage.connector import SageConnector
from runner.secrets import SecretResolver
from tests.standins.sage import SageStandIn, connection_config
from tests.support.servers import serve_app


@pytest.fixture
def sage():
    standin = SageStandIn()
    standin.authority.refresh_delay = 0.3        # a slow token endpoint widens the race window
    with serve_app(standin.app()) as server:
        standin.url = server.url
        yield standin


@pytest.fixture
def workers(sage, store, tmp_path, monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", Fernet.generate_key().decode())
    env = {"SAGE_CLIENT_ID": sage.client_id, "SAGE_CLIENT_SECRET": sage.client_secret}

    def make() -> SageConnector:
        runtime = Runtime(project_dir=tmp_path, settings={}, secrets=SecretResolver(env), store=store)
        return SageConnector("sage", connection_config(sage.url, business_id=sage.business_id), runtime)
    conns = [make(), make()]
    yield conns
    for c in conns:
        c.close()


def test_two_workers_refreshing_at_once_make_exactly_one_refresh(sage, store, workers):
    stale = TokenSet.from_response(sage.seed_tokens())
    stale.expires_at = 0                          # both workers see an expired access token
    workers[0].client.session.save(stale)
    barrier = threading.Barrier(2)
    results: dict[int, object] = {}

    def work(i: int) -> None:
        barrier.wait()
        try:
            out = workers[i].deliver([Item(i, f"k{i}", "contact",
                                           {"name": "Customer", "reference": f"cus_{i}"})])[0]
            results[i] = out if not out.ok else workers[i].client.session.access_token()
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(r, str) for r in results.values()), results
    assert sage.authority.refresh_calls == 1                 # exactly one refresh reached Sage
    assert results[0] == results[1]                          # both use the one new access token
    assert sage.authority.valid_access(results[0])
    assert sage.authority.refresh[stale.refresh_token] is False      # the old refresh token is spent
    saved, _ = TokenStore(store).read("sage")
    assert sage.authority.refresh[saved.refresh_token] is True       # the stored one is the rotated one
    assert len(sage.records("contacts")) == 2


def test_rotated_refresh_token_is_stored_before_the_access_token_is_used(sage, store, workers, monkeypatch):
    stale = TokenSet.from_response(sage.seed_tokens())
    stale.expires_at = 0
    conn = workers[0]
    conn.client.session.save(stale)
    seen = []
    real = conn.client.http.request

    def spy(method, url, **kw):           # what the store holds at the moment of the first API call
        seen.append(TokenStore(store).read("sage")[0].refresh_token)
        return real(method, url, **kw)
    monkeypatch.setattr(conn.client.http, "request", spy)
    assert conn.deliver([Item(1, "k", "contact", {"name": "Customer", "reference": "cus_9"})])[0].ok
    assert seen and seen[0] != stale.refresh_token and sage.authority.refresh[seen[0]] is True


def test_tokens_are_encrypted_at_rest(sage, store, workers):
    ts = TokenSet.from_response(sage.seed_tokens())
    workers[0].client.session.save(ts)
    from sqlalchemy import select

    from runner.store.tables import tokens
    with store.engine.connect() as c:
        blob = bytes(c.execute(select(tokens.c.ciphertext)).scalar())
    assert ts.refresh_token.encode() not in blob and ts.access_token.encode() not in blob
    assert ts.refresh_expires_at is not None and ts.expires_at - ts.refresh_expires_at < 0   # 300 s vs 31 days
