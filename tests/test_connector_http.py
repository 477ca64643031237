"""connectors/http.py: the one Retry-After reading, refresh-once-on-401 and status classification
every HTTP connector uses (against a loopback server)."""

from __future__ import annotations

import re
import time
from email.utils import formatdate

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.base import ErrorKind, TargetError
from connectors.http import classify_status, retry_after_seconds, send, send_with_refresh
from tests.support.servers import serve_app


def test_retry_after_http_date_two_minutes_ahead_is_120_seconds():
    exact = float(int(time.time()))                 # an HTTP-date has whole seconds, as servers write it
    assert retry_after_seconds(formatdate(exact + 120, usegmt=True), exact) == 120
    assert retry_after_seconds(formatdate(exact + 120, usegmt=True), exact + 0.6) == 120   # rounded up, not 119


def test_retry_after_seconds_past_dates_and_garbage():
    assert retry_after_seconds("17") == 17 and retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds(formatdate(time.time() - 60, usegmt=True)) == 0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert retry_after_seconds("") is None and retry_after_seconds("nan") is None


@pytest.mark.parametrize("status,kind", [(429, ErrorKind.THROTTLED), (500, ErrorKind.RETRYABLE),
                                         (503, ErrorKind.RETRYABLE), (408, ErrorKind.RETRYABLE),
                                         (401, ErrorKind.AUTH), (403, ErrorKind.AUTH),
                                         (400, ErrorKind.PERMANENT), (422, ErrorKind.PERMANENT)])
def test_classify_status(status, kind):
    err = classify_status(status, "x", retry_after=3, field="amount")
    assert err.kind == kind
    assert err.field == ("amount" if kind in (ErrorKind.PERMANENT, ErrorKind.AUTH) else None)
    assert classify_status(204, "ok") is None


class Tokens:
    def __init__(self, access_token):
        self.access_token = access_token


class Session:
    """A token source whose first token the server refuses."""

    def __init__(self):
        self.version = 1
        self.refreshes = 0

    def current(self):
        return Tokens(f"t{self.version}"), self.version

    def invalidate(self, version):
        self.refreshes += 1
        self.version = version + 1
        return self.current()


@pytest.fixture
def server():
    seen = []

    async def docs(request: Request):
        seen.append(request.headers.get("authorization"))
        good = request.headers.get("authorization") == f"Bearer {request.app.state.good}"
        return JSONResponse({"ok": good}, status_code=200 if good else 401)
    app = Starlette(routes=[Route("/docs", docs, methods=["GET"])])
    app.state.good = "t2"
    with serve_app(app) as srv:
        yield srv, app, seen


def test_a_401_refreshes_once_and_repeats(server):
    srv, app, seen = server
    session = Session()
    with httpx.Client(timeout=30) as http:
        resp = send_with_refresh(http, session, "GET", srv.url + "/docs", "the look-up")
    assert resp.status_code == 200 and session.refreshes == 1 and seen == ["Bearer t1", "Bearer t2"]


def test_a_second_401_is_returned_not_looped(server):
    srv, app, seen = server
    app.state.good = "never"
    session = Session()
    with httpx.Client(timeout=30) as http:
        resp = send_with_refresh(http, session, "GET", srv.url + "/docs", "the look-up")
    assert resp.status_code == 401 and session.refreshes == 1 and len(seen) == 2


def test_timeouts_and_connection_errors_are_retryable():
    with httpx.Client(timeout=30) as http:
        with pytest.raises(TargetError) as exc:
            send(http, "GET", "http://127.0.0.1:9/docs", "the look-up")
    assert exc.value.kind == ErrorKind.RETRYABLE and "connection error" in str(exc.value)


def test_json_body_and_answer_are_what_the_runners_jsonio_writes_and_reads():
    """connectors.http keeps its own exact-decimal JSON (connectors import nothing from the runner):
    byte for byte what runner.core.jsonio writes, and Decimals back."""
    import datetime
    from decimal import Decimal

    from connectors.http import json_answer, json_body
    from runner.core import jsonio
    values = [{"amount": Decimal("12.30"), "n": 3, "ok": True, "none": None, "name": "Café \u2028 \"q\"",
               "lines": [{"x": Decimal("-0.001")}, [], {}], "when": datetime.date(2024, 5, 1), 7: (1, "a")},
              [], {}, "plain", Decimal("1E+3")]
    for v in values:
        assert json_body(v) == jsonio.dumps(v).encode("utf-8")
    for bad in (1.5, Decimal("NaN"), object()):
        with pytest.raises((TypeError, ValueError)) as mine:
            json_body(bad)
        with pytest.raises(type(mine.value), match=re.escape(str(mine.value))):
            jsonio.dumps(bad)
    answer = json_answer(httpx.Response(200, content=b'{"a": 1.10, "b": [2, 3.5e1]}'))
    assert answer == jsonio.loads(b'{"a": 1.10, "b": [2, 3.5e1]}') and isinstance(answer["a"], Decimal)
    assert json_answer(httpx.Response(204)) is None


def test_stripe_errors_retry_after_is_read_like_every_targets():
    """The catch-up, the reconciliation and the balance-transaction fetch read a Stripe 429's
    Retry-After through the one parser: delta-seconds, an HTTP-date, or nothing usable."""
    import time as _time
    from email.utils import formatdate
    from types import SimpleNamespace

    from runner.language.stripe_client import retry_after
    assert retry_after(SimpleNamespace(headers={"Retry-After": "7"})) == 7.0
    when = formatdate(_time.time() + 120, usegmt=True)
    assert 118 <= retry_after(SimpleNamespace(headers={"retry-after": when})) <= 121
    assert retry_after(SimpleNamespace(headers={"Retry-After": "soon"})) is None
    assert retry_after(SimpleNamespace(headers=None)) is None
