"""A small httpx client for the Sage Accounting API v3.1.

Bearer tokens come from ``connectors.oauth.OAuthSession`` (5-minute access
tokens, rotating refresh tokens, refreshed under a cross-worker lock); a 401
triggers one refresh and one repeat, then AUTH (``connectors.http.send_with_refresh``). ``X-Business`` selects the
business. Bodies are written and read with exact decimals.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import httpx

from connectors.base import ErrorKind, TargetError
from connectors.http import json_answer, json_body, send_with_refresh

from .errors import classify

DEFAULT_BASE_URL = "https://api.accounting.sage.com/v3.1"
MAX_PAGE_SIZE = 200


class SageClient:
    def __init__(self, session: Any, *, base_url: str = DEFAULT_BASE_URL, business_id: str | None = None,
                 timeout: float = 30.0, page_size: int = MAX_PAGE_SIZE, http: httpx.Client | None = None):
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.business_id = business_id
        self.page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
        self.http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def business(self, extra: Mapping[str, Any]) -> str | None:
        return self.business_id or extra.get("business_id")

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                body: Any = None, business: bool = True) -> Any:
        """One API call; the parsed JSON answer, or a classified TargetError."""
        url = path if path.startswith("http") else self.base_url + "/" + path.lstrip("/")
        what = f"{method} /{path.lstrip('/').split('?')[0]}" if not path.startswith("http") else f"{method} {path}"
        content = json_body(body) if body is not None else None

        def token_headers(tokens: Any) -> dict[str, str]:
            headers = {"Content-Type": "application/json"} if content is not None else {}
            biz = self.business(tokens.extra)
            if business and biz:
                headers["X-Business"] = biz
            return headers
        response = send_with_refresh(self.http, self.session, method, url, f"Sage {what}", params=params,
                                     content=content, token_headers=token_headers)
        error = classify(response, what)
        if error is not None:
            raise error
        return json_answer(response)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def create(self, resource: str, wrapper: str, document: Mapping[str, Any]) -> dict:
        return self.request("POST", resource, body={wrapper: dict(document)})

    def iter_list(self, resource: str, params: Mapping[str, Any] | None = None, *,
                  business: bool = True) -> Iterator[dict]:
        """Every item of a list endpoint, following ``$next`` page by page."""
        query: dict[str, Any] | None = {"items_per_page": self.page_size, **(params or {})}
        path = resource
        while path:
            page = self.request("GET", path, params=query, business=business)
            if not isinstance(page, dict):
                raise TargetError(f"Sage answered GET /{resource} with {type(page).__name__}, expected a page "
                                  "with $items", ErrorKind.RETRYABLE)
            yield from page.get("$items") or []
            nxt = page.get("$next")
            if not nxt:
                return
            # $next is a path under the API base (with its query), or an absolute URL
            path, query = (nxt if nxt.startswith("http") else nxt.lstrip("/")), None

    def find_by_reference(self, resource: str, reference: str, params: Mapping[str, Any] | None = None,
                          attributes: str = "") -> dict | None:
        """The first item whose ``reference`` is exactly ``reference`` (Sage's filters narrow the list);
        ``attributes``: more fields to read (comma-separated, e.g. ``currency``)."""
        query = {**(params or {}), "attributes": ",".join(["reference"] + [a for a in attributes.split(",") if a])}
        for item in self.iter_list(resource, query):
            if item.get("reference") == reference:
                return item
        return None
