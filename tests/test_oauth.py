"""connectors.oauth: encrypted token store, refresh with rotation, no races between workers."""

from __future__ import annotations

import threading
import urllib.parse

import httpx
import pytest
from cryptography.fernet import Fernet

from connectors.base import ErrorKind
from connectors.oauth import (
    OAuthConfig,
    OAuthError,
    OAuthSession,
    TokenKeyError,
    TokenSet,
    TokenStore,
    authorization_url,
    authorize_interactively,
    catch_redirect,
    fernet,
)
from runner.core.errors import LedgerflowError
from runner.core.secrets import SecretResolver
from runner.store import open_store as open_runner_store
from runner.store.tokens import TokenRows
from tests.standins.oauth_server import TokenAuthority
from tests.support.servers import free_port, serve_app


def open_store(url: str) -> TokenRows:
    """The token rows over a store: what the runner hands connectors.oauth (``Runtime.tokens``)."""
    return TokenRows(open_runner_store(url))


@pytest.fixture
def key(monkeypatch):
    k = Fernet.generate_key().decode()
    monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", k)
    return k


@pytest.fixture
def authority():
    auth = TokenAuthority()
    with serve_app(auth.app()) as srv:
        auth.url = srv.url + "/oauth2/v1/tokens/bearer"
        yield auth


def config(authority, **kw) -> OAuthConfig:
    return OAuthConfig(token_url=authority.url, client_id=authority.client_id,
                       client_secret=authority.client_secret, authorize_url="https://appcenter.example/connect",
                       scopes=("com.intuit.quickbooks.accounting",), reconnect_hint="run `ledgerflow connect x`", **kw)


def seeded(store, authority, *, expired=False) -> TokenSet:
    body = authority.seed()
    ts = TokenSet.from_response(body)
    if expired:
        ts.expires_at = 0
    TokenStore(store).write("qbo", ts)
    return ts


def test_missing_or_bad_key_is_a_clear_error(monkeypatch, store_url):
    monkeypatch.delenv("LEDGERFLOW_TOKEN_KEY", raising=False)
    with pytest.raises(TokenKeyError, match="LEDGERFLOW_TOKEN_KEY is not set"):
        TokenStore(open_store(store_url))
    with pytest.raises(TokenKeyError, match="not a valid Fernet key"):
        fernet({"LEDGERFLOW_TOKEN_KEY": "short"})


def test_tokens_are_encrypted_at_rest_and_a_changed_key_is_named(store_url, key, monkeypatch):
    store = open_store(store_url)
    ts = TokenSet("at-plain-value", "rt-plain-value", 123.0, None, {"realm_id": "9130"})
    assert TokenStore(store).write("qbo", ts) == 1
    assert TokenStore(store).write("qbo", ts) == 2
    from sqlalchemy import select

    from runner.store.tables import tokens
    with store.store.engine.connect() as c:
        blob = bytes(c.execute(select(tokens.c.ciphertext)).scalar_one())
    assert b"plain-value" not in blob and b"9130" not in blob
    back, version = TokenStore(store).read("qbo")
    assert (back.access_token, back.refresh_token, back.extra, version) == ("at-plain-value", "rt-plain-value",
                                                                            {"realm_id": "9130"}, 2)
    monkeypatch.setenv("LEDGERFLOW_TOKEN_KEY", Fernet.generate_key().decode())
    with pytest.raises(TokenKeyError, match="do not decrypt"):
        TokenStore(store).read("qbo")


def test_fresh_token_is_used_without_a_request(store_url, key, authority):
    store = open_store(store_url)
    ts = seeded(store, authority)
    assert OAuthSession("qbo", config(authority), store).access_token() == ts.access_token
    assert authority.refresh_calls == 0


def test_expiring_token_refreshes_within_the_margin_and_saves_rotation_first(store_url, key, authority):
    store = open_store(store_url)
    ts = seeded(store, authority)
    session = OAuthSession("qbo", config(authority), store, margin=300,
                           clock=lambda: ts.expires_at - 200)        # inside the safety margin
    new = session.access_token()
    assert new != ts.access_token and authority.refresh_calls == 1
    stored, version = TokenStore(store).read("qbo")                 # committed, seen by anyone
    assert stored.access_token == new and stored.refresh_token != ts.refresh_token and version == 2
    assert authority.refresh[stored.refresh_token] and not authority.refresh[ts.refresh_token]
    # the next refresh works with the rotated refresh token (the old one is spent)
    OAuthSession("qbo", config(authority), store).invalidate(version)
    assert authority.refresh_calls == 2


def test_two_workers_refreshing_at_once_make_one_request(store_url, key, authority):
    store = open_store(store_url)
    seeded(store, authority, expired=True)
    authority.refresh_delay = 0.3
    results, errors = [], []

    def worker():
        try:
            results.append(OAuthSession("qbo", config(authority), open_store(store_url)).access_token())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert authority.refresh_calls == 1           # without the lock, the losers would spend a dead refresh token
    assert len(set(results)) == 1 and authority.valid_access(results[0])


def test_rejected_token_is_refreshed_once_unless_another_worker_did(store_url, key, authority):
    store = open_store(store_url)
    seeded(store, authority)
    a = OAuthSession("qbo", config(authority), store)
    b = OAuthSession("qbo", config(authority), store)
    _, v = a.current()
    b.current()
    a.invalidate(v)
    assert authority.refresh_calls == 1
    tb, _ = b.invalidate(v)                   # b saw the same stale version: reuses a's token
    assert authority.refresh_calls == 1 and tb.access_token == a.access_token()


def test_refused_refresh_is_auth_with_the_reconnect_hint(store_url, key, authority):
    store = open_store(store_url)
    ts = seeded(store, authority, expired=True)
    authority.refresh[ts.refresh_token] = False            # revoked
    with pytest.raises(OAuthError) as exc:
        OAuthSession("qbo", config(authority), store).access_token()
    assert exc.value.kind == ErrorKind.AUTH
    assert "invalid_grant" in str(exc.value) and "ledgerflow connect x" in str(exc.value)
    assert ts.refresh_token not in str(exc.value)


def test_not_connected_and_wrong_client_secret(store_url, key, authority):
    store = open_store(store_url)
    with pytest.raises(OAuthError, match="has no OAuth tokens: run `ledgerflow connect x`"):
        OAuthSession("qbo", config(authority), store).access_token()
    seeded(store, authority, expired=True)
    bad = OAuthConfig(token_url=authority.url, client_id=authority.client_id, client_secret="wrong")
    with pytest.raises(OAuthError, match="invalid_client") as exc:
        OAuthSession("qbo", bad, store).access_token()
    assert "wrong" not in str(exc.value)


def test_token_endpoint_down_is_retryable(store_url, key):
    store = open_store(store_url)
    TokenStore(store).write("qbo", TokenSet("a", "r", 0))
    cfg = OAuthConfig(token_url=f"http://127.0.0.1:{free_port()}/token", client_id="c", client_secret="s")
    with pytest.raises(OAuthError) as exc:
        OAuthSession("qbo", cfg, store).access_token()
    assert exc.value.kind == ErrorKind.RETRYABLE


def test_body_client_auth(store_url, key, authority):
    authority.client_auth = "body"
    store = open_store(store_url)
    seeded(store, authority, expired=True)
    OAuthSession("qbo", config(authority, client_auth="body"), store).access_token()
    assert authority.refresh_calls == 1


def test_config_from_connection_reads_secret_references():
    secrets = SecretResolver({"QBO_ID": "cid", "QBO_SECRET": "csecret"})
    cfg = OAuthConfig.from_connection("qbo", {"client_id": {"env": "QBO_ID"}, "client_secret": {"env": "QBO_SECRET"}},
                                      secrets, defaults={"token_url": "https://t.example/token"})
    assert (cfg.client_id, cfg.client_secret, cfg.token_url) == ("cid", "csecret", "https://t.example/token")
    assert "csecret" not in repr(cfg)
    with pytest.raises(LedgerflowError, match=r"connections.qbo.client_secret: environment variable QBO_SECRET"):
        OAuthConfig.from_connection("qbo", {"client_id": "x", "client_secret": {"env": "QBO_SECRET"},
                                            "token_url": "t"}, SecretResolver({}))
    with pytest.raises(LedgerflowError, match=r"connections.qbo.token_url is required"):
        OAuthConfig.from_connection("qbo", {"client_id": "x", "client_secret": {"env": "QBO_SECRET"}}, secrets)


def test_authorization_url_and_interactive_connect(store_url, key, authority):
    store = open_store(store_url)
    port = free_port()
    cfg = OAuthConfig(token_url=authority.url, client_id=authority.client_id, client_secret=authority.client_secret,
                      authorize_url="https://appcenter.example/connect/oauth2", scopes=("a", "b"),
                      redirect_uri=f"http://localhost:{port}/callback")
    url = authorization_url(cfg, "st4te")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert q == {"client_id": [authority.client_id], "response_type": ["code"], "scope": ["a b"],
                 "redirect_uri": [cfg.redirect_uri], "state": ["st4te"]}

    def browser(text: str) -> None:       # the "user": follow the printed URL's redirect
        shown = urllib.parse.parse_qs(urllib.parse.urlsplit(text.split()[-1]).query)
        code = authority.issue_code(cfg.redirect_uri)
        threading.Thread(target=lambda: httpx.get(cfg.redirect_uri, params={
            "code": code, "state": shown["state"][0], "realmId": "4620816365"})).start()

    ts = authorize_interactively("qbo", cfg, store, show=browser, timeout=10,
                                 extra_from_redirect={"realmId": "realm_id"})
    stored, _ = TokenStore(store).read("qbo")
    assert stored.access_token == ts.access_token and stored.extra == {"realm_id": "4620816365"}


def test_redirect_with_wrong_state_or_error_is_refused(store_url, key, authority):
    store = open_store(store_url)
    port = free_port()
    cfg = OAuthConfig(token_url=authority.url, client_id="c", client_secret="s", authorize_url="https://a.example/x",
                      redirect_uri=f"http://localhost:{port}/cb")
    for params, msg in (({"code": "x", "state": "forged"}, "state does not match"),
                        ({"error": "access_denied"}, "authorization was refused: access_denied")):
        def browser(_text, params=params):
            threading.Thread(target=lambda: httpx.get(cfg.redirect_uri, params=params)).start()
        with pytest.raises(LedgerflowError, match=msg):
            authorize_interactively("qbo", cfg, store, show=browser, timeout=10)
    with pytest.raises(LedgerflowError, match="expected http://localhost"):
        catch_redirect("https://example.com/cb", timeout=1)
