"""A generic OAuth 2 token endpoint (RFC 6749) that rotates refresh tokens.

Each refresh issues a new access token and a new refresh token; the old
refresh token is invalid from then on (``invalid_grant``), as Intuit and Sage
do. Client authentication by HTTP basic or by form fields, as configured.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class TokenAuthority:
    client_id: str = "client-abc"
    client_secret: str = "secret-xyz"
    client_auth: str = "basic"
    access_ttl: int = 3600
    refresh_ttl: int = 8726400            # Intuit: 100 days
    refresh_delay: float = 0.0            # seconds to sleep inside a refresh (widens race windows)
    codes: dict[str, dict] = field(default_factory=dict)        # code -> extra (redirect_uri)
    access: dict[str, float] = field(default_factory=dict)      # access token -> expires_at
    refresh: dict[str, bool] = field(default_factory=dict)      # refresh token -> still valid
    refresh_calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_code(self, redirect_uri: str) -> str:
        code = "code-" + secrets.token_hex(8)
        self.codes[code] = {"redirect_uri": redirect_uri}
        return code

    def mint(self) -> dict:
        at, rt = "at-" + secrets.token_hex(12), "rt-" + secrets.token_hex(12)
        self.access[at] = time.time() + self.access_ttl
        self.refresh[rt] = True
        return {"access_token": at, "refresh_token": rt, "token_type": "bearer",
                "expires_in": self.access_ttl, "x_refresh_token_expires_in": self.refresh_ttl}

    def seed(self) -> dict:
        """Tokens as if the user had connected (for tests that skip the browser)."""
        with self.lock:
            return self.mint()

    def valid_access(self, token: str | None) -> bool:
        return bool(token) and self.access.get(token, 0) > time.time()

    def expire_access(self) -> None:
        for k in self.access:
            self.access[k] = 0.0

    def _client_ok(self, request: Request, form) -> bool:
        if self.client_auth == "basic":
            header = request.headers.get("authorization", "")
            if not header.lower().startswith("basic "):
                return False
            try:
                cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return False
        else:
            cid, secret = form.get("client_id"), form.get("client_secret")
        return cid == self.client_id and secret == self.client_secret

    async def token(self, request: Request) -> JSONResponse:
        form = {k: v[-1] for k, v in urllib.parse.parse_qs((await request.body()).decode()).items()}
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            info = self.codes.pop(form.get("code", ""), None)
            if info is None or info["redirect_uri"] != form.get("redirect_uri"):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            with self.lock:
                return JSONResponse(self.mint())
        if grant == "refresh_token":
            if self.refresh_delay:
                await asyncio.sleep(self.refresh_delay)
            with self.lock:
                rt = form.get("refresh_token", "")
                if not self.refresh.get(rt):
                    return JSONResponse({"error": "invalid_grant"}, status_code=400)
                self.refresh[rt] = False          # rotation: the old one is spent
                self.refresh_calls += 1
                return JSONResponse(self.mint())
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    def routes(self, path: str = "/oauth2/v1/tokens/bearer") -> list[Route]:
        return [Route(path, self.token, methods=["POST"])]

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())
