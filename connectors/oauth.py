"""OAuth 2 (authorization code) for connectors: encrypted token store, safe refresh.

* ``OAuthConfig``: endpoints, client credentials (from secret references) and
  how the client authenticates at the token endpoint (HTTP basic or body).
* ``TokenStore``: tokens as Fernet ciphertext in the ``oauth_tokens`` table
  (key from ``LEDGERFLOW_TOKEN_KEY``), one row per connection, with a version.
* ``OAuthSession``: hands out a valid access token, refreshing it a safety
  margin before it expires. A refresh runs under a row lock (``SELECT ... FOR
  UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite); inside the lock the
  row is re-read, and a token another worker has just refreshed is reused. A
  rotated refresh token is committed before the new access token is returned,
  so a crash can never lose the only valid refresh token.
* ``authorization_url`` / ``catch_redirect`` / ``authorize_interactively``:
  the pieces of a ``ledgerflow connect <system>`` command.

Tokens and client secrets never appear in messages or logs.
"""

from __future__ import annotations

import http.server
import json
import os
import secrets as _secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .base import ErrorKind, LedgerflowError, TargetError

TOKEN_KEY_ENV = "LEDGERFLOW_TOKEN_KEY"
DEFAULT_MARGIN = 300.0        # refresh this many seconds before the access token expires


class TokenKeyError(LedgerflowError):
    """LEDGERFLOW_TOKEN_KEY is missing or not a Fernet key, or the ciphertext does not match it."""


class OAuthError(TargetError):
    """The authorization server refused (invalid_grant and friends): the user must reconnect."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.AUTH, **kw: Any):
        super().__init__(message, kind, **kw)


class NotConnected(OAuthError):
    """No tokens stored for this connection yet."""


# ---- configuration -------------------------------------------------------------

@dataclass(frozen=True)
class OAuthConfig:
    """Where and how to get tokens. ``client_auth`` is ``basic`` (RFC 6749 2.3.1) or ``body``."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    authorize_url: str | None = None
    scopes: tuple[str, ...] = ()
    redirect_uri: str = "http://localhost:8765/callback"
    client_auth: str = "basic"
    reconnect_hint: str = "reconnect the connection"   # e.g. "ledgerflow connect quickbooks-online"

    @classmethod
    def from_connection(cls, name: str, cfg: Mapping[str, Any], secrets: Any, *,
                        defaults: Mapping[str, Any] | None = None) -> "OAuthConfig":
        """Build from a connection block; ``client_id``/``client_secret`` are secret references
        (a plain string is accepted for the client id, which is not a secret)."""
        merged = {**(defaults or {}), **{k: v for k, v in cfg.items() if v is not None}}
        where = f"connections.{name}"
        for key in ("token_url", "client_id", "client_secret"):
            if not merged.get(key):
                raise LedgerflowError(f"{where}.{key} is required for OAuth 2")
        cid = merged["client_id"]
        client_id = cid if isinstance(cid, str) else secrets.resolve(cid, f"{where}.client_id")
        client_secret = secrets.resolve(merged["client_secret"], f"{where}.client_secret")
        scopes = merged.get("scopes") or ()
        if isinstance(scopes, str):
            scopes = tuple(scopes.split())
        if merged.get("client_auth", "basic") not in ("basic", "body"):
            raise LedgerflowError(f"{where}.client_auth: expected basic or body, got {merged['client_auth']!r}")
        return cls(token_url=merged["token_url"], client_id=client_id, client_secret=client_secret,
                   authorize_url=merged.get("authorize_url"), scopes=tuple(scopes),
                   redirect_uri=merged.get("redirect_uri", cls.redirect_uri),
                   client_auth=merged.get("client_auth", "basic"),
                   reconnect_hint=merged.get("reconnect_hint", cls.reconnect_hint))


@dataclass
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float = 0.0                    # epoch seconds
    refresh_expires_at: float | None = None    # epoch seconds, when the server says
    extra: dict[str, Any] = field(default_factory=dict)   # e.g. {"realm_id": ...}

    def fresh(self, margin: float, now: float | None = None) -> bool:
        return self.expires_at - margin > (time.time() if now is None else now)

    def to_json(self) -> str:
        return json.dumps({"access_token": self.access_token, "refresh_token": self.refresh_token,
                           "expires_at": self.expires_at, "refresh_expires_at": self.refresh_expires_at,
                           "extra": self.extra})

    @classmethod
    def from_json(cls, text: str) -> "TokenSet":
        d = json.loads(text)
        return cls(d["access_token"], d.get("refresh_token"), float(d.get("expires_at") or 0),
                   d.get("refresh_expires_at"), d.get("extra") or {})

    @classmethod
    def from_response(cls, body: Mapping[str, Any], *, previous: "TokenSet | None" = None,
                      now: float | None = None) -> "TokenSet":
        """From a token endpoint's JSON; keeps the old refresh token when the server sends none."""
        now = time.time() if now is None else now
        if not body.get("access_token"):
            raise OAuthError("the token endpoint's response has no access_token", ErrorKind.RETRYABLE)
        expires_in = float(body.get("expires_in") or 3600)
        r_in = body.get("x_refresh_token_expires_in") or body.get("refresh_token_expires_in")
        refresh = body.get("refresh_token") or (previous.refresh_token if previous else None)
        extra = dict(previous.extra) if previous else {}
        return cls(body["access_token"], refresh, now + expires_in,
                   now + float(r_in) if r_in else (previous.refresh_expires_at if previous else None), extra)


# ---- encrypted storage --------------------------------------------------------------

def fernet(environ: Mapping[str, str] | None = None):
    """The Fernet for LEDGERFLOW_TOKEN_KEY, with a clear error when it is unset or malformed."""
    from cryptography.fernet import Fernet
    key = (environ if environ is not None else os.environ).get(TOKEN_KEY_ENV)
    if not key:
        raise TokenKeyError(f"{TOKEN_KEY_ENV} is not set: OAuth tokens are stored encrypted with it. Create one "
                            "with `python -c \"from cryptography.fernet import Fernet; "
                            "print(Fernet.generate_key().decode())\"` and keep it with your other secrets")
    try:
        return Fernet(key.encode() if isinstance(key, str) else key)
    except (ValueError, TypeError):
        raise TokenKeyError(f"{TOKEN_KEY_ENV} is not a valid Fernet key (expected 32 url-safe "
                            "base64-encoded bytes)") from None


def token_rows(tokens: Any) -> Any:
    """``Runtime.tokens`` (the token rows: locked/read/write/delete); None when there is no store."""
    if tokens is not None and not hasattr(tokens, "locked"):
        raise TypeError(f"expected the runtime's token rows (Runtime.tokens), got {type(tokens).__name__}")
    return tokens


class TokenStore:
    """Encrypted tokens per connection in the store's ``oauth_tokens`` table.

    ``tokens`` is ``Runtime.tokens`` (the table's SQL lives with the runner's store; this class only
    encrypts and decrypts)."""

    def __init__(self, tokens: Any, cipher: Any = None):
        self.rows = token_rows(tokens)
        self.cipher = cipher if cipher is not None else fernet()

    def _decrypt(self, connection: str, blob: bytes) -> TokenSet:
        from cryptography.fernet import InvalidToken
        try:
            return TokenSet.from_json(self.cipher.decrypt(bytes(blob)).decode())
        except InvalidToken:
            raise TokenKeyError(f"the stored tokens of connection {connection!r} do not decrypt with "
                                f"{TOKEN_KEY_ENV} (was the key changed?); reconnect to store new ones") from None

    def read(self, connection: str, conn: Any = None, *, lock: bool = False) -> tuple[TokenSet, int] | None:
        """(tokens, version), or None. ``lock`` adds FOR UPDATE (PostgreSQL; SQLite's lock is BEGIN IMMEDIATE)."""
        found = self.rows.read(connection, conn, lock=lock)
        return None if found is None else (self._decrypt(connection, found[0]), found[1])

    def write(self, connection: str, ts: TokenSet, conn: Any = None) -> int:
        """Insert or replace; returns the new version."""
        return self.rows.write(connection, self.cipher.encrypt(ts.to_json().encode()), conn)

    def delete(self, connection: str) -> None:
        self.rows.delete(connection)


# ---- the token endpoint ------------------------------------------------------------

def token_request(config: OAuthConfig, form: dict[str, str], http: Any = None) -> dict[str, Any]:
    """POST to the token endpoint; classified errors (never echoing tokens)."""
    import httpx
    data = dict(form)
    auth = None
    if config.client_auth == "basic":
        auth = httpx.BasicAuth(config.client_id, config.client_secret)
    else:
        data.update(client_id=config.client_id, client_secret=config.client_secret)
    client = http or httpx.Client(timeout=30.0)
    try:
        resp = client.post(config.token_url, data=data, auth=auth, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise OAuthError(f"token endpoint {config.token_url} unreachable: {type(exc).__name__}",
                         ErrorKind.RETRYABLE) from None
    finally:
        if http is None:
            client.close()
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code == 429:
        from .http import response_retry_after
        raise OAuthError("token endpoint throttled the request", ErrorKind.THROTTLED,
                         retry_after=response_retry_after(resp))
    if resp.status_code >= 500:
        raise OAuthError(f"token endpoint answered HTTP {resp.status_code}", ErrorKind.RETRYABLE)
    if resp.status_code >= 400 or not isinstance(body, dict):
        err = body.get("error", f"HTTP {resp.status_code}") if isinstance(body, dict) else f"HTTP {resp.status_code}"
        desc = body.get("error_description") if isinstance(body, dict) else None
        raise OAuthError(f"token endpoint refused the {form.get('grant_type')} grant: {err}"
                         + (f" ({desc})" if desc else ""), ErrorKind.AUTH)
    return body


# ---- a session: valid access tokens, refreshed safely ----------------------------------

class OAuthSession:
    """Valid access tokens for one connection, shared safely by many workers."""

    def __init__(self, connection: str, config: OAuthConfig, tokens: Any, *, http: Any = None,
                 margin: float = DEFAULT_MARGIN, cipher: Any = None,
                 clock: Callable[[], float] = time.time):
        self.connection = connection
        self.config = config
        self.tokens = TokenStore(tokens, cipher)
        self.http = http
        self.margin = margin
        self.clock = clock
        self._cached: tuple[TokenSet, int] | None = None

    def _not_connected(self) -> NotConnected:
        return NotConnected(f"connection {self.connection!r} has no OAuth tokens: {self.config.reconnect_hint}")

    def current(self) -> tuple[TokenSet, int]:
        """The stored tokens and their version, refreshed first when about to expire."""
        if self._cached and self._cached[0].fresh(self.margin, self.clock()):
            return self._cached
        found = self.tokens.read(self.connection)
        if found is None:
            raise self._not_connected()
        if not found[0].fresh(self.margin, self.clock()):
            found = self.refresh(seen_version=found[1])
        self._cached = found
        return found

    def access_token(self) -> str:
        return self.current()[0].access_token

    def refresh(self, seen_version: int | None = None) -> tuple[TokenSet, int]:
        """Refresh under the row lock. ``seen_version`` is the version whose access token the
        caller found stale or saw rejected; when another worker already moved past it and its
        token is fresh, that token is reused and no request is made."""
        with self.tokens.rows.locked() as conn:
            found = self.tokens.read(self.connection, conn, lock=True)
            if found is None:
                raise self._not_connected()
            ts, version = found
            if seen_version is not None and version != seen_version and ts.fresh(self.margin, self.clock()):
                self._cached = found
                return found
            if not ts.refresh_token:
                raise OAuthError(f"connection {self.connection!r} has no refresh token: "
                                 f"{self.config.reconnect_hint}")
            if ts.refresh_expires_at is not None and ts.refresh_expires_at <= self.clock():
                raise OAuthError(f"the refresh token of connection {self.connection!r} has expired: "
                                 f"{self.config.reconnect_hint}")
            try:
                body = token_request(self.config, {"grant_type": "refresh_token",
                                                   "refresh_token": ts.refresh_token}, self.http)
            except OAuthError as exc:
                if exc.kind == ErrorKind.AUTH:
                    exc.args = (f"{exc.args[0]} — {self.config.reconnect_hint}",)
                raise
            new = TokenSet.from_response(body, previous=ts, now=self.clock())
            new_version = self.tokens.write(self.connection, new, conn)
        # committed: the rotated refresh token is safe before anyone uses the new access token
        self._cached = (new, new_version)
        return self._cached

    def invalidate(self, version: int) -> tuple[TokenSet, int]:
        """The target rejected the access token of ``version`` (HTTP 401): refresh unless
        another worker already did."""
        self._cached = None
        return self.refresh(seen_version=version)

    def save(self, ts: TokenSet) -> int:
        version = self.tokens.write(self.connection, ts)
        self._cached = (ts, version)
        return version


# ---- connecting: authorization URL, redirect catcher, code exchange -------------------

def authorization_url(config: OAuthConfig, state: str, **extra: str) -> str:
    if not config.authorize_url:
        raise LedgerflowError("no authorize_url configured for this connection")
    params = {"client_id": config.client_id, "response_type": "code", "redirect_uri": config.redirect_uri,
              "state": state, **extra}
    if config.scopes:
        params["scope"] = " ".join(config.scopes)
    sep = "&" if "?" in config.authorize_url else "?"
    return config.authorize_url + sep + urllib.parse.urlencode(params)


def catch_redirect(redirect_uri: str, *, timeout: float = 300.0,
                   ready: Callable[[], None] | None = None) -> dict[str, str]:
    """Serve one request on the redirect URI's localhost port; return its query parameters."""
    parts = urllib.parse.urlsplit(redirect_uri)
    if parts.hostname not in ("localhost", "127.0.0.1") or not parts.port:
        raise LedgerflowError(f"redirect_uri {redirect_uri!r}: expected http://localhost:<port>/<path> "
                              "so the connect command can take the redirect")
    result: dict[str, str] = {}
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            url = urllib.parse.urlsplit(self.path)
            if url.path != (parts.path or "/"):
                self.send_error(404)
                return
            result.update({k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"ledgerflow: authorization received; you can close this window.\n")
            done.set()

        def log_message(self, *args):  # the query holds the code: keep it out of logs
            pass

    server = http.server.HTTPServer(("127.0.0.1", parts.port), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        if ready:
            ready()
        if not done.wait(timeout):
            raise LedgerflowError(f"no redirect reached {redirect_uri} within {int(timeout)} s")
    finally:
        server.shutdown()
        server.server_close()
    return result


def exchange_code(config: OAuthConfig, code: str, http: Any = None) -> TokenSet:
    body = token_request(config, {"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": config.redirect_uri}, http)
    return TokenSet.from_response(body)


def authorize_interactively(connection: str, config: OAuthConfig, tokens: Any, *,
                            show: Callable[[str], None] = print, timeout: float = 300.0,
                            extra_from_redirect: Mapping[str, str] | None = None,
                            http: Any = None, cipher: Any = None) -> TokenSet:
    """The whole authorization-code flow: show the URL, take the redirect, check ``state``,
    exchange the code and store the tokens. ``extra_from_redirect`` maps redirect query
    parameters to keys kept with the tokens (QBO: ``{"realmId": "realm_id"}``)."""
    token_store = TokenStore(tokens, cipher)      # fail on a missing key before the user clicks
    state = _secrets.token_urlsafe(24)
    url = authorization_url(config, state)
    params = catch_redirect(config.redirect_uri, timeout=timeout,
                            ready=lambda: show(f"Open this URL in a browser and approve access:\n\n  {url}\n"))
    if params.get("error"):
        raise LedgerflowError(f"authorization was refused: {params['error']}"
                              + (f" ({params['error_description']})" if params.get("error_description") else ""))
    if params.get("state") != state:
        raise LedgerflowError("the redirect's state does not match this request (a stale or forged redirect); "
                              "run the connect command again")
    if not params.get("code"):
        raise LedgerflowError("the redirect carries no authorization code")
    ts = exchange_code(config, params["code"], http)
    for src, dest in (extra_from_redirect or {}).items():
        if not params.get(src):
            raise LedgerflowError(f"the redirect carries no {src}")
        ts.extra[dest] = params[src]
    token_store.write(connection, ts)
    return ts
