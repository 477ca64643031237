"""The Stripe webhook receiver over real HTTP: signatures, tolerance, rotation,
duplicates, concurrency, Connect, limits, and what gets into the inbox."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

import httpx
import pytest

from runner.app import App
from runner.core import jsonio
from runner.language.fixtures import event_from_fixture
from runner.language.spec import load_project
from runner.operate.server import build_asgi
from tests.conftest import ROOT
from tests.helpers_project import write
from tests.support.servers import serve_app
from tests.webhook_helpers import CONNECT, NEW, OLD, set_secrets, signed, stripe_project

MiB = 1024 * 1024


@pytest.fixture
def receiver(tmp_path, store_url, monkeypatch, stripe_fixtures):
    set_secrets(monkeypatch)
    path = stripe_project(tmp_path / "proj", store_url)
    app = App(load_project(path))
    with serve_app(build_asgi(app, background=False)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client, app.store


def charge_event(**kw):
    return event_from_fixture("charge.succeeded", **kw)


def test_signed_event_is_in_the_inbox_before_the_response(receiver):
    client, store = receiver
    ev = charge_event(overrides={"amount": 1999})
    body, headers = signed(ev)
    r = client.post("/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "id": ev["id"], "duplicate": False}
    row = store.get_event(ev["id"])          # no waiting: it is committed when the 200 arrives
    assert row["status"] == "pending" and row["source"] == "webhook:platform"
    assert row["payload"] == body.decode()   # the body exactly as Stripe sent it
    assert row["type"] == "charge.succeeded" and row["account"] is None


def test_tolerance_edge_default_300s(receiver):
    client, store = receiver
    now = int(time.time())
    inside = charge_event(overrides={"amount": 1})
    r = client.post("/webhooks/stripe", content=(s := signed(inside, t=now - 290))[0], headers=s[1])
    assert r.status_code == 200
    stale = charge_event(overrides={"amount": 2})
    r = client.post("/webhooks/stripe", content=(s := signed(stale, t=now - 310))[0], headers=s[1])
    assert r.status_code == 400
    assert r.json()["error"] == "timestamp outside the tolerance of 300s"
    assert store.get_event(stale["id"]) is None


def test_tolerance_is_configurable_per_endpoint(receiver):
    client, store = receiver        # the connect endpoint allows 60 s
    now = int(time.time())
    ok = charge_event(account="acct_1TolOk", overrides={"amount": 3})
    late = charge_event(account="acct_1TolLate", overrides={"amount": 4})
    assert client.post("/webhooks/stripe/connect", content=(s := signed(ok, CONNECT, t=now - 50))[0],
                       headers=s[1]).status_code == 200
    r = client.post("/webhooks/stripe/connect", content=(s := signed(late, CONNECT, t=now - 70))[0], headers=s[1])
    assert r.status_code == 400 and "tolerance of 60s" in r.json()["error"]
    assert store.get_event(late["id"]) is None


def test_rotated_secrets_old_and_new_both_verify(receiver):
    client, store = receiver
    a, b, c = (charge_event(overrides={"amount": n}) for n in (11, 12, 13))
    assert client.post("/webhooks/stripe", content=(s := signed(a, OLD))[0], headers=s[1]).status_code == 200
    assert client.post("/webhooks/stripe", content=(s := signed(b, NEW))[0], headers=s[1]).status_code == 200
    r = client.post("/webhooks/stripe", content=(s := signed(c, "whsec_someone_elses_secret"))[0], headers=s[1])
    assert r.status_code == 400 and r.json()["error"] == "no v1 signature matches any signing secret of this endpoint"
    assert store.get_event(a["id"]) and store.get_event(b["id"]) and store.get_event(c["id"]) is None


def test_several_v1_signatures_any_match_is_accepted(receiver):
    client, store = receiver
    ev = charge_event(overrides={"amount": 14})
    body, headers = signed(ev, NEW)
    t, v1 = headers["Stripe-Signature"].split(",")
    headers["Stripe-Signature"] = f"{t},v1={'0' * 64},{v1},v0=ignored"
    assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200


@pytest.mark.parametrize("header, reason", [
    (None, "missing Stripe-Signature header"),
    ("v1=abc", "malformed Stripe-Signature header (expected t=...,v1=...)"),
    ("t=123", "malformed Stripe-Signature header (expected t=...,v1=...)"),
])
def test_unsigned_and_malformed_signature_are_rejected(receiver, header, reason):
    client, store = receiver
    ev = charge_event(overrides={"amount": 15})
    headers = {"Stripe-Signature": header} if header else {}
    r = client.post("/webhooks/stripe", content=jsonio.dumps(ev), headers=headers)
    assert (r.status_code, r.json()["error"]) == (400, reason)
    assert store.count_events() == 0


def test_tampered_body_is_rejected(receiver):
    client, store = receiver
    ev = charge_event(overrides={"amount": 16})
    body, headers = signed(ev)
    tampered = body.replace(b'"amount": 16,', b'"amount": 99999,')
    assert tampered != body
    r = client.post("/webhooks/stripe", content=tampered, headers=headers)
    assert r.status_code == 400 and store.count_events() == 0


def test_duplicate_delivery_gets_200_and_changes_nothing(receiver):
    client, store = receiver
    ev = charge_event(overrides={"amount": 17})
    body, headers = signed(ev)
    assert client.post("/webhooks/stripe", content=body, headers=headers).json()["duplicate"] is False
    store.mark_event(ev["id"], "dispatched", flows="some-flow")
    before = store.get_event(ev["id"])
    # Stripe retries with a fresh signature; a changed body under the same id changes nothing either
    ev2 = dict(ev, pending_webhooks=7)
    for again in (ev, ev2):
        r = client.post("/webhooks/stripe", content=(s := signed(again))[0], headers=s[1])
        assert r.status_code == 200 and r.json()["duplicate"] is True
    assert store.get_event(ev["id"]) == before
    assert store.count_events() == 1


def test_concurrent_deliveries_of_one_id_make_exactly_one_row(receiver):
    client, store = receiver
    ev = charge_event(overrides={"amount": 18})

    async def burst():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30,
                                     limits=httpx.Limits(max_connections=40)) as ac:
            reqs = [signed(ev) for _ in range(40)]
            return await asyncio.gather(*(ac.post("/webhooks/stripe", content=b, headers=h) for b, h in reqs))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 40
    assert sum(1 for r in responses if not r.json()["duplicate"]) == 1
    assert store.count_events() == 1


def test_connect_event_keeps_its_account_and_endpoint(receiver):
    client, store = receiver
    ev = charge_event(account="acct_1ConnectA", overrides={"amount": 19})
    r = client.post("/webhooks/stripe/connect", content=(s := signed(ev, CONNECT))[0], headers=s[1])
    assert r.status_code == 200
    row = store.get_event(ev["id"])
    assert (row["account"], row["source"]) == ("acct_1ConnectA", "webhook:connect")
    # the platform's secret does not open the Connect endpoint
    other = charge_event(account="acct_1ConnectB", overrides={"amount": 20})
    r = client.post("/webhooks/stripe/connect", content=(s := signed(other, NEW))[0], headers=s[1])
    assert r.status_code == 400 and store.get_event(other["id"]) is None


def test_unknown_event_type_is_accepted_into_the_inbox(receiver):
    client, store = receiver
    ev = event_from_fixture("treasury.future_thing.created", resource="charge")
    r = client.post("/webhooks/stripe", content=(s := signed(ev))[0], headers=s[1])
    assert r.status_code == 200
    assert store.get_event(ev["id"])["type"] == "treasury.future_thing.created"


def _padded(size: int) -> str:
    ev = charge_event(overrides={"amount": 21})
    ev["data"]["object"]["metadata"] = {"pad": ""}
    base = len(jsonio.dumps(ev).encode())
    ev["data"]["object"]["metadata"]["pad"] = "x" * (size - base)
    text = jsonio.dumps(ev)
    assert len(text.encode()) == size
    return text


def test_body_of_exactly_1_mib_is_accepted(receiver):
    client, store = receiver
    body, headers = signed(_padded(MiB))
    assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 200


def test_body_of_1_mib_plus_1_byte_gets_413(receiver):
    client, store = receiver
    body, headers = signed(_padded(MiB + 1))
    r = client.post("/webhooks/stripe", content=body, headers=headers)
    assert (r.status_code, r.json()["error"]) == (413, f"body larger than {MiB} bytes")
    # the same without Content-Length (chunked): cut off while streaming
    r = client.post("/webhooks/stripe", content=iter([body[:MiB // 2], body[MiB // 2:]]), headers=headers)
    assert r.status_code == 413
    assert store.count_events() == 0


def test_non_json_body_with_a_valid_signature_is_rejected(receiver):
    client, store = receiver
    body, headers = signed("id=evt_123&type=charge.succeeded")
    r = client.post("/webhooks/stripe", content=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"].startswith("body is not JSON (line 1, column 1")
    assert store.count_events() == 0


@pytest.mark.parametrize("body, reason", [
    ('[1, 2]', "body: expected a JSON object (a Stripe event), got list"),
    ('{"id": "evt_1", "type": "charge.succeeded"}', "body: the event has no data.object (expected a Stripe event)"),
    ('{"object": "charge", "id": "ch_1", "type": "x", "data": {"object": {}}}', "body: expected object 'event', got 'charge'"),
])
def test_signed_json_that_is_not_an_event_is_rejected(receiver, body, reason):
    client, store = receiver
    r = client.post("/webhooks/stripe", content=(s := signed(body))[0], headers=s[1])
    assert (r.status_code, r.json()["error"]) == (400, reason)
    assert store.count_events() == 0


@pytest.mark.one_store
def test_non_utf8_body_is_rejected(receiver):
    client, store = receiver
    body, headers = signed("{}")
    r = client.post("/webhooks/stripe", content=b'{"id": "\xff\xfe"}', headers=headers)
    assert (r.status_code, r.json()["error"]) == (400, "body is not UTF-8 (expected a JSON Stripe event)")


def test_rejections_are_counted_in_logs_without_bodies(receiver, caplog):
    client, store = receiver
    caplog.set_level(logging.WARNING, logger="ledgerflow.webhooks")
    marker = "jenny.rosen@example.com"
    ev = charge_event(overrides={"receipt_email": marker, "amount": 22})
    body, headers = signed(ev, "whsec_wrong_secret_123456")
    for _ in range(3):
        assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 400
    client.post("/webhooks/stripe", content=jsonio.dumps(ev))                  # unsigned
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "ledgerflow.webhooks")
    assert "rejected webhook POST /webhooks/stripe" in text and "(rejected so far: 4)" in text
    assert marker not in text and ev["id"] not in text and "whsec_" not in text
    health = client.get("/healthz").json()
    assert health["rejected"] == {"no v1 signature matches any signing secret of this endpoint": 3,
                                  "missing Stripe-Signature header": 1}
    assert store.count_events() == 0


@pytest.mark.one_store
def test_get_on_the_webhook_path_is_not_allowed(receiver):
    client, _ = receiver
    assert client.get("/webhooks/stripe").status_code == 405


def test_serve_app_runs_background_services_and_mounts(tmp_path, store_url, monkeypatch, stripe_fixtures):
    """The webhook -> inbox -> dispatcher path inside the serve app, with the
    serve_hooks extension points (a test mount, the dispatcher as the only service)."""
    from runner.operate import serve_hooks
    from tests.test_dispatch import CHARGES

    set_secrets(monkeypatch)
    root = tmp_path / "proj"
    path = stripe_project(root, store_url, extra="serve: {dispatch_interval: 0.05}\n")
    shutil.copytree(ROOT / "mappings" / "csv", root / "mappings" / "csv")
    write(root, "flows/charges.yaml", CHARGES)
    monkeypatch.chdir(root)
    monkeypatch.setattr(serve_hooks, "BACKGROUND", ["runner.ingest.dispatch:background"])
    monkeypatch.setattr(serve_hooks, "ASGI_MOUNTS", ["tests.test_webhooks:_test_mount"])
    app = App(load_project(path))
    with serve_app(build_asgi(app)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/mounted/ping").text == "pong"
        ev = charge_event(overrides={"amount": 4321})
        assert client.post("/webhooks/stripe", content=(s := signed(ev))[0], headers=s[1]).status_code == 200
        deadline = time.monotonic() + 30
        while app.store.get_event(ev["id"])["status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert app.store.get_event(ev["id"])["status"] == "dispatched"
    assert app.store.count_deliveries("pending") == 1


def _test_mount(app):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    return "/mounted", Starlette(routes=[Route("/ping", lambda r: PlainTextResponse("pong"))])


def test_an_id_too_long_for_the_inbox_is_rejected_not_queued(receiver):
    client, store = receiver
    ev = charge_event(overrides={"amount": 23})
    ev["id"] = "evt_" + "x" * 300
    r = client.post("/webhooks/stripe", content=(s := signed(ev))[0], headers=s[1])
    assert (r.status_code, r.json()["error"]) == (400, "body: the event's id must be a string of at most 255 characters")
    assert store.count_events() == 0


def test_when_the_inbox_cannot_commit_the_answer_is_503_and_one_bad_row_spares_the_batch(receiver, monkeypatch):
    client, store = receiver
    real = store.add_events

    def failing(rows, conn=None):
        if any(ev["id"].endswith("poison") for ev, _, _ in rows):
            raise RuntimeError("disk full")
        return real(rows, conn)

    monkeypatch.setattr(store, "add_events", failing)
    good = [charge_event(overrides={"amount": 30 + i}) for i in range(10)]
    bad = charge_event(overrides={"amount": 99})
    bad["id"] = "evt_poison"

    async def burst():
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as ac:
            return await asyncio.gather(*(ac.post("/webhooks/stripe", content=b, headers=h)
                                          for b, h in (signed(e) for e in [*good, bad])))

    *oks, failed = asyncio.run(burst())
    assert [r.status_code for r in oks] == [200] * 10
    assert (failed.status_code, failed.json()["error"]) == (503, "inbox unavailable, retry later")
    assert store.event_ids(e["id"] for e in good) == {e["id"] for e in good}
    assert store.get_event("evt_poison") is None


class _BrokenService:
    def start(self):
        raise RuntimeError("cannot start")

    def stop(self):
        pass


def _broken_service(app):
    return _BrokenService()


def test_a_background_service_that_fails_to_start_does_not_close_the_front_door(tmp_path, store_url, monkeypatch,
                                                                                 stripe_fixtures, caplog):
    from runner.operate import serve_hooks
    set_secrets(monkeypatch)
    monkeypatch.setattr(serve_hooks, "BACKGROUND", ["tests.test_webhooks:_broken_service"])
    app = App(load_project(stripe_project(tmp_path / "proj", store_url)))
    with serve_app(build_asgi(app)) as server:
        ev = charge_event(overrides={"amount": 24})
        assert httpx.post(server.url + "/webhooks/stripe", content=(s := signed(ev))[0],
                          headers=s[1]).status_code == 200
    assert "background service tests.test_webhooks:_broken_service did not start" in caplog.text


def test_writer_commits_the_rest_of_a_batch_one_by_one_when_a_row_fails(store, monkeypatch):
    from runner.ingest.inbox_writer import InboxUnavailable, InboxWriter
    real = store.add_events
    writer = InboxWriter(store)
    monkeypatch.setattr(store, "add_events", lambda rows, conn=None: (
        (_ for _ in ()).throw(RuntimeError("bad row")) if any(e["id"] == "evt_bad" for e, _, _ in rows)
        else real(rows, conn)))
    batch = [({"id": i, "type": "x"}, "{}", "t", None, None) for i in ("evt_a", "evt_bad", "evt_b", "evt_a")]
    out = writer._insert(batch)
    assert out[0] is True and isinstance(out[1], InboxUnavailable) and out[2] is True and out[3] is False
    assert store.event_ids(["evt_a", "evt_b", "evt_bad"]) == {"evt_a", "evt_b"}


# ---- issue #14: signed but odd bodies are 400s with a reason, never 500 or a 503 that Stripe retries ----------

def _odd_bodies() -> list[tuple[str, str, str]]:
    ev = charge_event(overrides={"amount": 40})
    text = jsonio.dumps(ev)
    deep = text.replace('"data": {', '"deep": ' + "[" * 200_000 + "]" * 200_000 + ', "data": {', 1)
    big = dict(ev, created=2 ** 63)
    nul = dict(ev, id="evt_nul\u0000byte")
    nan = text.replace('"created": ', '"created": NaN, "x": ', 1)
    surrogate = text.replace(f'"id": "{ev["id"]}"', '"id": "evt_\\ud800lone"', 1)
    newline = dict(ev, type="charge.succeeded\nforged: line")
    return [("deep", deep, "body is nested more than 64 levels deep"),
            ("created", jsonio.dumps(big), "body: the event's created must be a unix timestamp"),
            ("negative created", jsonio.dumps(dict(ev, created=-1)), "body: the event's created must be"),
            ("nul", jsonio.dumps(nul), "body: the event's id contains control characters"),
            ("nan", nan, "body is not JSON (NaN is not a JSON number)"),
            ("surrogate", surrogate, "body: the event's id contains an unpaired surrogate"),
            ("newline", jsonio.dumps(newline), "body: the event's type contains control characters")]


@pytest.mark.parametrize("name", [n for n, _, _ in _odd_bodies()])
def test_signed_odd_bodies_get_400_with_the_reason(receiver, name):
    client, store = receiver
    body, reason = next((b, r) for n, b, r in _odd_bodies() if n == name)
    r = client.post("/webhooks/stripe", content=(s := signed(body))[0], headers=s[1])
    assert r.status_code == 400, (r.status_code, r.text[:200])
    assert r.json()["error"].startswith(reason)
    assert store.count_events() == 0
    ok = charge_event(overrides={"amount": 41})                       # and the next one is fine
    assert client.post("/webhooks/stripe", content=(s := signed(ok))[0], headers=s[1]).status_code == 200


def test_a_timestamp_far_in_the_future_is_rejected(receiver):
    client, store = receiver
    now = int(time.time())
    soon = charge_event(overrides={"amount": 42})
    r = client.post("/webhooks/stripe", content=(s := signed(soon, t=now + 200))[0], headers=s[1])
    assert r.status_code == 200                                        # clock skew within 300 s is fine
    future = charge_event(overrides={"amount": 43})
    r = client.post("/webhooks/stripe", content=(s := signed(future, t=now + 3600))[0], headers=s[1])
    assert (r.status_code, r.json()["error"]) == (400, "timestamp more than 300s in the future")
    assert store.get_event(future["id"]) is None
    assert client.get("/healthz").json()["rejected"] == {"timestamp in the future": 1}


def test_future_tolerance_is_configurable_per_endpoint(tmp_path, store_url, monkeypatch, stripe_fixtures):
    set_secrets(monkeypatch)
    app = App(load_project(stripe_project(tmp_path / "proj", store_url)))
    app.project.raw["stripe"]["endpoints"]["connect"]["future_tolerance"] = 30
    with serve_app(build_asgi(app, background=False)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        now = int(time.time())
        ev = charge_event(account="acct_1Future", overrides={"amount": 44})
        r = client.post("/webhooks/stripe/connect", content=(s := signed(ev, CONNECT, t=now + 120))[0],
                        headers=s[1])
        assert (r.status_code, r.json()["error"]) == (400, "timestamp more than 30s in the future")
        r = client.post("/webhooks/stripe", content=(s := signed(ev, NEW, t=now + 120))[0], headers=s[1])
        assert r.status_code == 200                                     # the platform endpoint keeps 300 s


def test_the_writer_keeps_its_connection_and_replaces_one_that_went_stale(store, monkeypatch):
    """One connection across batches; a kept connection that fails (the server dropped it while
    idle) is replaced and the batch tried once more, so no 503 comes of it."""
    from runner.ingest.inbox_writer import InboxWriter
    writer = InboxWriter(store)
    item = lambda i: ({"id": f"evt_keep_{i}", "type": "x"}, "{}", "t", None, None)   # noqa: E731
    assert writer._insert([item(1)]) == [True]
    kept = writer._conn
    assert writer._insert([item(2)]) == [True] and writer._conn is kept
    real, calls = store.add_events, []

    def stale_once(rows, conn=None):
        calls.append(conn)
        if len(calls) == 1:
            raise RuntimeError("server closed the connection unexpectedly")
        return real(rows, conn)

    monkeypatch.setattr(store, "add_events", stale_once)
    assert writer._insert([item(3)]) == [True]
    assert calls[0] is kept and calls[1] is not kept and writer._conn is calls[1]
    assert store.event_ids([f"evt_keep_{i}" for i in (1, 2, 3)]) == {f"evt_keep_{i}" for i in (1, 2, 3)}
    writer._drop_connection()


def _sdk_accepts(body: bytes, header: str, secrets: list[str], tolerance: int) -> bool:
    import stripe
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(body.decode(), header, secret, tolerance)
            return True
        except stripe.SignatureVerificationError:
            continue
    return False


def test_the_signature_check_agrees_with_the_stripe_sdk():
    """runner.ingest.webhooks checks Stripe's scheme over the raw bytes (no copies); on every header shape it
    accepts exactly what ``stripe.WebhookSignature.verify_header`` accepts."""
    from runner.ingest.webhooks import Rejected, _check_signature, sign
    body = '{"id": "evt_sig", "amount": "12.30", "name": "Zoë"}'.encode()
    now = int(time.time())
    good = sign(body.decode(), NEW, now).split(",")[1]
    other = sign(body.decode(), OLD, now).split(",")[1]
    headers = [f"t={now},{good}", f"t={now},{other}", f"t={now},v1=00,{good}", f"t={now},{good},v0=ab",
               f"{good},t={now}", f"t={now - 301},{good}", f"t={now},t=1,{good}", f"t=1,t={now},{good}",
               f"t={now}, {good}", f"t= {now},{good}", f"t={now},{good}=x", f"t={now},{good.upper()}",
               f"t={now},v1", f"t={now}", good, f"t=x,{good}", "", "t", f"t={now},v1=", f"t={now};{good}"]
    for secrets in ([NEW], [OLD, NEW], [CONNECT], ["", NEW], ["  "]):
        for header in headers:
            try:
                _check_signature(body, header, secrets, 300, 10 ** 9, now=now)
                ours = True
            except Rejected:
                ours = False
            assert ours == _sdk_accepts(body, header, secrets, 300), (header, secrets)
