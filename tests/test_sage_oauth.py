"""Sage's rotating refresh tokens: one refresh for many workers, the new token saved first."""

from __future__ import annotations

import threading

import pytest
from cryptography.fernet import Fernet

from connectors.base import Item
from connectors.oauth import TokenSet, TokenStore
from connectors.sage.connector import SageConnector
from runner.connector_runtime import connector_runtime
from runner.core.secrets import SecretResolver
from runner.store.tokens import TokenRows
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
        runtime = connector_runtime(tmp_path, {}, SecretResolver(env), store)
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
    saved, _ = TokenStore(TokenRows(store)).read("sage")
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
        seen.append(TokenStore(TokenRows(store)).read("sage")[0].refresh_token)
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


def test_connect_sage_runs_the_code_flow_and_records_the_business(sage, project_dir, store_url, monkeypatch, capsys):
    import httpx

    import runner.cli.commands.connect as connect_cmd
    from runner.cli import main
    from runner.store import open_store
    from tests.support.servers import free_port

    port = free_port()
    cfg = project_dir / "ledgerflow.yaml"
    cfg.write_text(cfg.read_text().replace(
        "    redirect_uri: http://localhost:8766/callback",
        f"    redirect_uri: http://localhost:{port}/callback\n    base_url: {sage.url}/v3.1\n"
        f"    token_url: {sage.url}/token\n    authorize_url: {sage.url}/oauth2/auth/central?filter=apiv3.1"))
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("SAGE_CLIENT_ID", sage.client_id)
    monkeypatch.setenv("SAGE_CLIENT_SECRET", sage.client_secret)
    shown = []

    def browser(text, **_kw):                # the user opens the printed URL and approves
        shown.append(text)
        url = next((w for w in str(text).split() if w.startswith("http")), None)
        if url:
            threading.Thread(target=lambda: httpx.get(url, follow_redirects=True, timeout=10)).start()
    monkeypatch.setattr(connect_cmd, "print", browser, raising=False)
    assert main(["connect", "sage", "--timeout", "20"]) == 0
    assert "filter=apiv3.1" in shown[0] and "scope=full_access" in shown[0]
    assert "business Demo Marketplace Ltd (bizA0001)" in shown[-1] and "business_id to choose another" in shown[-1]
    stored, _ = TokenStore(TokenRows(open_store(store_url))).read("sage")
    assert stored.extra == {"country": "us", "business_id": "bizA0001"}
    assert sage.authority.valid_access(stored.access_token) and sage.authority.refresh[stored.refresh_token]
