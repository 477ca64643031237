"""The webhook receiver under hostile and odd input (issue #14), over real HTTP on loopback, served with the
protocol and limits ``ledgerflow serve`` uses (``runner.operate.server.limits``).

* item 10: header and body deadlines, the connection cap, slow clients (many connections trickling
  bytes) while real webhooks keep being answered;
* a bounded property-based fuzz of the endpoint: headers, bodies, encodings, sizes, and raw bytes
  that are not HTTP at all. Every request gets a 2xx or a 4xx with a reason, nothing unsigned is
  stored, the server keeps answering, logs carry no bodies, secrets or control characters.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.app import App
from runner.core import jsonio
from runner.ingest.webhooks import sign
from runner.language.fixtures import event_from_fixture
from runner.language.spec import load_project
from runner.operate.server import build_asgi
from runner.operate.server.limits import Limits
from tests.support.servers import serve_app
from tests.webhook_helpers import NEW, SECRETS, set_secrets, signed, stripe_project

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MARKER = "zqmarker"                       # in every fuzzed body: must never reach a log line
FAST = Limits(header_timeout=2.0, body_timeout=2.0)


def serve_receiver(app, limits: Limits = FAST):
    return serve_app(build_asgi(app, background=False, limits=limits), **limits.uvicorn_options())


@pytest.fixture
def hostile(tmp_path, store_url, monkeypatch, stripe_fixtures, caplog):
    caplog.set_level(logging.DEBUG)
    set_secrets(monkeypatch)
    app = App(load_project(stripe_project(tmp_path / "proj", store_url)))
    with serve_receiver(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield server, client, app.store, caplog


@pytest.fixture
def hostile_sqlite(tmp_path, monkeypatch, stripe_fixtures, caplog):
    caplog.set_level(logging.DEBUG)
    set_secrets(monkeypatch)
    app = App(load_project(stripe_project(tmp_path / "proj", f"sqlite:///{tmp_path / 'store.db'}")))
    with serve_receiver(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield server, client, app.store, caplog


def logs_are_clean(caplog, *forbidden: str) -> None:
    for rec in caplog.records:
        m = rec.getMessage()
        assert not CONTROL.search(m), m
        for f in (*forbidden, *SECRETS.values(), MARKER):
            assert f not in m, (f, m)


def valid_post(client, amount: int) -> httpx.Response:
    ev = event_from_fixture("charge.succeeded", overrides={"amount": amount})
    body, headers = signed(ev)
    return client.post("/webhooks/stripe", content=body, headers=headers)


def read_until_closed(sock: socket.socket, limit: float = 60.0) -> bytes:
    sock.settimeout(limit)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk
    except (ConnectionResetError, BrokenPipeError):
        return out


# ---- item 10: deadlines and slow clients ---------------------------------------------------------------------

@pytest.mark.one_store
def test_headers_that_never_finish_get_408_and_the_connection_closed(hostile):
    server, client, store, caplog = hostile
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Sig")     # and then nothing
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]


def test_a_body_that_never_finishes_gets_408(hostile):
    server, client, store, caplog = hostile
    ev = event_from_fixture("charge.succeeded", overrides={"amount": 7})
    body, headers = signed(ev)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        head = (f"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: {headers['Stripe-Signature']}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        s.sendall(head + body[:10])                                           # the rest never comes
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b"body not received within 2s" in answer
    assert store.count_events() == 0


def test_a_keep_alive_connection_cannot_trickle_its_next_request(hostile):
    server, client, store, caplog = hostile
    ev = event_from_fixture("charge.succeeded", overrides={"amount": 8})
    body, headers = signed(ev)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall((f"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: {headers['Stripe-Signature']}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
        s.sendall(b"POST /webhooks/stripe HTTP/1.1\r\n")                      # the next one stalls
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 408" in answer                                           # closed by the header deadline


def test_slow_clients_do_not_stop_webhooks_being_answered(hostile):
    """80 connections trickle a byte at a time (half in their headers, half in their bodies) while
    signed webhooks are posted; every webhook is answered and stored, every trickler is cut off."""
    server, client, store, caplog = hostile
    stop = threading.Event()
    cut_off: list[bool] = []
    lock = threading.Lock()

    def trickle(i: int) -> None:
        payload = (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                   + b"X-Pad: " + b"a" * 10_000) if i % 2 else \
            (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"{" * 100_000)
        start = 0 if i % 2 else payload.index(b"\r\n\r\n") + 4
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
                s.sendall(payload[:start])
                for k in range(start, len(payload)):
                    if stop.is_set():
                        break
                    s.sendall(payload[k:k + 1])
                    time.sleep(0.2)
                ok = False
        except (ConnectionResetError, BrokenPipeError, socket.timeout, OSError):
            ok = True                                      # the server hung up on it
        with lock:
            cut_off.append(ok)

    threads = [threading.Thread(target=trickle, args=(i,), daemon=True) for i in range(80)]
    for t in threads:
        t.start()
    try:
        answered = [valid_post(client, 100 + n).status_code for n in range(30)]
    finally:
        deadline = time.monotonic() + 120          # the tricklers are cut off by the deadlines (2 s here)
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        stop.set()
    assert answered == [200] * 30
    assert store.count_events() == 30
    assert len(cut_off) == 80 and all(cut_off), cut_off.count(False)
    assert client.get("/healthz").json()["status"] == "ok"


def test_limits_come_from_serve_limits(tmp_path, store_url, monkeypatch, stripe_fixtures):
    set_secrets(monkeypatch)
    app = App(load_project(stripe_project(tmp_path / "proj", store_url, extra=(
        "serve:\n  limits: {max_connections: 50, header_timeout: 3, body_timeout: 4, keep_alive_timeout: 2, "
        "max_header_bytes: 8192}\n"))))
    from runner.operate.server.listeners import build_servers
    [server] = build_servers(app, "127.0.0.1", 0, background=False, qbwc=None)
    c = server.config
    assert (c.limit_concurrency, c.timeout_keep_alive, c.h11_max_incomplete_event_size) == (50, 2, 8192)
    assert c.http.header_timeout == 3.0 and c.app.limits.body_timeout == 4.0


@pytest.mark.one_store
def test_headers_beyond_max_header_bytes_get_400(hostile):
    server, client, store, caplog = hostile
    r = client.post("/webhooks/stripe", content=b"{}", headers={"X-Big": "a" * 70_000})
    assert r.status_code == 400


# ---- the standing fuzz -------------------------------------------------------------------------------------

def _event_body(amount: int) -> str:
    ev = event_from_fixture("charge.succeeded", overrides={"amount": amount, "description": MARKER})
    return jsonio.dumps(ev)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@st.composite
def requests_(draw):
    """(path, body bytes, headers, should_be_accepted)."""
    kind = draw(st.sampled_from(["event", "mutated", "json", "bytes", "deep", "encoded", "big"]))
    amount = draw(st.integers(1, 10 ** 9))
    text = _event_body(amount)
    if kind == "mutated":
        ev = json.loads(text)
        key = draw(st.sampled_from(["id", "type", "created", "account", "object", "data"]))
        ev[key] = draw(json_values)
        text = json.dumps(ev)
    elif kind == "json":
        text = json.dumps({"m": MARKER, "v": draw(json_values)})
    elif kind == "deep":
        n = draw(st.integers(60, 3000))
        text = text.replace('"data": {', '"d": ' + "[" * n + "]" * n + ', "data": {', 1)
    elif kind == "big":
        text = text.replace(MARKER, MARKER + "x" * draw(st.sampled_from([10, 1024 * 1024, 2 * 1024 * 1024])))
    if kind == "bytes":
        body = MARKER.encode() + draw(st.binary(max_size=300))
    elif kind == "encoded":
        body = text.encode(draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig"])), "replace")
    else:
        body = text.encode()
    sig = draw(st.sampled_from(["valid", "none", "wrong-secret", "stale", "future", "garbage", "valid-other-body"]))
    now = int(time.time())
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", "application/json; charset=utf-16"]))}
    as_text = body.decode("utf-8", "replace")          # what a signer would have signed
    if sig == "valid":
        headers["Stripe-Signature"] = sign(as_text, NEW, now)
    elif sig == "wrong-secret":
        headers["Stripe-Signature"] = sign(as_text, "whsec_not_ours_0123456789", now)
    elif sig in ("stale", "future"):
        headers["Stripe-Signature"] = sign(as_text, NEW, now - 4000 if sig == "stale" else now + 4000)
    elif sig == "garbage":
        headers["Stripe-Signature"] = draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                                                   max_size=120)).strip()   # (raw whitespace: the raw fuzz)
    elif sig == "valid-other-body":
        headers["Stripe-Signature"] = sign(_event_body(amount + 1), NEW, now)
    extra = draw(st.dictionaries(st.sampled_from(["X-A", "Accept", "Content-Encoding", "Transfer-Encoding-X"]),
                                 st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                                         max_size=40).map(str.strip),
                                 max_size=2))
    headers.update(extra)
    path = draw(st.sampled_from(["/webhooks/stripe", "/webhooks/stripe/connect", "/webhooks/stripe/", "/healthz"]))
    accepted = sig == "valid" and kind == "event" and path == "/webhooks/stripe"
    return path, body, headers, accepted, sig == "valid"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(req=requests_())
def test_fuzz_webhook_endpoint(hostile_sqlite, req):
    server, client, store, caplog = hostile_sqlite
    path, body, headers, must_accept, signed_event = req
    before = store.count_events()
    r = client.post(path, content=body, headers=headers)
    assert 200 <= r.status_code < 500, (r.status_code, r.text[:200])
    if r.status_code >= 400 and path != "/webhooks/stripe/" and path != "/healthz":
        assert r.json()["error"].strip()
    if must_accept:
        assert r.status_code == 200, r.text
    stored = store.count_events() - before
    if r.status_code == 200 and path.startswith("/webhooks/stripe") and path != "/webhooks/stripe/":
        assert signed_event and stored in (0, 1)        # 0: a duplicate id
    else:
        assert stored == 0                               # nothing unsigned, tampered or odd is stored
    logs_are_clean(caplog)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(min_size=1, max_size=600),
                     st.builds(lambda a, b: b"POST /webhooks/stripe HTTP/1.1\r\n" + a + b"\r\n\r\n" + b, st.binary(max_size=200),
                               st.binary(max_size=200)),
                     st.builds(lambda n: b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * n + b"\r\n", st.integers(0, 5000))))
def test_fuzz_raw_bytes_that_are_barely_http(hostile_sqlite, raw):
    server, client, store, caplog = hostile_sqlite
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        try:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        answer = read_until_closed(s)
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 200 <= status < 500, answer[:200]
    assert store.count_events() == 0
    logs_are_clean(caplog)
    assert client.get("/healthz").status_code == 200                    # still answering others


def test_fuzzed_garbage_alongside_real_webhooks(hostile):
    """Garbage from one client, signed events from another: every event is answered and stored."""
    server, client, store, caplog = hostile
    stop = threading.Event()
    statuses: list[int] = []

    def garbage():
        with httpx.Client(base_url=server.url, timeout=60) as c:
            i = 0
            while not stop.is_set():
                i += 1
                body = [b"\x00" * i, b"[" * 5000, ("{\"id\": \"evt_\\u0000\", \"m\": \"%s\"}" % MARKER).encode(),
                        b'{"a": NaN}'][i % 4]
                h = signed(body.decode("latin-1"))[1] if i % 2 else {}
                statuses.append(c.post("/webhooks/stripe", content=body, headers=h).status_code)

    th = threading.Thread(target=garbage)
    th.start()
    try:
        answered = [valid_post(client, 500 + n).status_code for n in range(20)]
        deadline = time.monotonic() + 60
        while len(statuses) < 8 and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.05)
    finally:
        stop.set()
        th.join(60)
    assert answered == [200] * 20 and store.count_events() == 20
    assert statuses and all(400 <= s < 500 for s in statuses)
    logs_are_clean(caplog)
    assert set(client.get("/healthz").json()["rejected"]) <= {
        "missing Stripe-Signature header", "body is not JSON", "body nested too deeply",
        "body: control characters in the envelope", "body: not a Stripe event", "body is not UTF-8 (expected a JSON Stripe event)"}  # noqa: E501
