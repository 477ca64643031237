"""The accounting model at run time: a real store (SQLite and PostgreSQL), the Stripe stand-in
over loopback, the dispatcher, the delivery loop's plan rows, the DLQ and Slack alerts."""

from __future__ import annotations

import re
import time
from decimal import Decimal as D
from pathlib import Path

import pytest

from runner.app import App
from runner.cli import main
from runner.core import jsonio
from runner.deliver.delivery import deliver_rows
from runner.ingest.dispatch import dispatch_pending
from runner.language.spec import load_project
from runner.language.validate import validate_paths
from runner.store.tables import deliveries
from tests.helpers_project import write
from tests.standins.slack import WEBHOOK_PATH, SlackStandIn
from tests.standins.stripe_api import DEFAULT_KEY, StripeStandin
from tests.support.servers import free_port, serve_app

T = 1767225600
SELLER = "acct_1PostingSeller"

ROW = """\
key: "{{ posting.key }}"
kind: "{{ posting.kind }}"
books: "{{ posting.books }}"
gross: "{{ posting.gross }}"
fee: "{{ posting.fee }}"
net: "{{ posting.net }}"
currency: "{{ doc.currency }}"
"""

POSTINGS_FLOW = """\
name: postings
trigger: {stripe: [charge.succeeded]}
routes:
  - name: platform
    target: csv
    action: row
    mapping: mappings/row.yaml
  - name: seller
    target: seller_csv
    action: row
    mapping: mappings/row.yaml
retry: {attempts: 5, backoff: exponential, first_delay: 1s, max_delay: 10s}
alert: {slack: "#finance-ops", window: 10m}
"""

RAW_FLOW = """\
name: raw
trigger: {stripe: [charge.succeeded]}
routes:
  - name: line
    target: csv
    action: row
    mapping: {charge: "{{ charge.id }}", amount: "{{ charge.amount }}"}
"""


def project_yaml(store_url: str, api_base: str, *, rate_limit: float = 100, slack_url: str | None = None,
                 extra: str = "") -> str:
    text = f"""\
settings:
  store_url: {store_url}
  home_currency: USD
  timezone: UTC
  fx_provider: ecb
  state_dir: .state
stripe:
  api_key: {{env: LF_TEST_STRIPE_KEY}}
  api_base: {api_base}
  max_network_retries: 0
  fetch: {{rate_limit: {rate_limit}, concurrency: 8}}
accounting:
  connect:
    destination_charges: agent
    account_books: {{{SELLER}: seller_csv}}
connections:
  csv: {{type: csv, directory: out/csv}}
  seller_csv: {{type: csv, directory: out/seller}}
{extra}"""
    if slack_url:
        text += "slack:\n  webhook_url: {env: TEST_SLACK_WEBHOOK}\n  window: 10m\n"
    return text


def txn(n: int, amount: int = 10000, fee: int = 320, currency: str = "usd", **extra) -> dict:
    return {"id": f"txn_pr{n:06d}", "object": "balance_transaction", "amount": amount, "fee": fee,
            "net": amount - fee, "currency": currency, "created": T, "reporting_category": "charge",
            "type": "charge", "source": f"ch_pr{n:06d}", "exchange_rate": None, "status": "available",
            "fee_details": [{"amount": fee, "currency": currency, "type": "stripe_fee",
                             "description": "Stripe processing fees"}] if fee else [], **extra}


def charge_event(n: int, *, amount: int = 10000, currency: str = "usd", account: str | None = None) -> dict:
    obj = {"id": f"ch_pr{n:06d}", "object": "charge", "amount": amount, "currency": currency, "created": T,
           "paid": True, "status": "succeeded", "balance_transaction": f"txn_pr{n:06d}", "metadata": {},
           "customer": None}
    ev = {"id": f"evt_pr{n:06d}", "object": "event", "type": "charge.succeeded", "created": T,
          "data": {"object": obj}}
    if account:
        ev["account"] = account
    return ev


@pytest.fixture
def stand():
    s = StripeStandin()
    with serve_app(s.app) as srv:
        s.url = srv.url
        yield s


@pytest.fixture
def slack():
    s = SlackStandIn()
    with serve_app(s.app) as srv:
        s.url = srv.url
        yield s


@pytest.fixture
def make_project(tmp_path, store_url, monkeypatch):
    monkeypatch.setenv("LF_TEST_STRIPE_KEY", DEFAULT_KEY)

    def make(api_base: str, flows: dict[str, str], *, mappings: dict[str, str] | None = None, **kw) -> Path:
        root = tmp_path / "proj"
        write(root, "ledgerflow.yaml", project_yaml(store_url, api_base, **kw))
        write(root, "mappings/row.yaml", ROW)
        for name, text in (mappings or {}).items():
            write(root, f"mappings/{name}", text)
        for name, text in flows.items():
            write(root, f"flows/{name}.yaml", text)
        monkeypatch.chdir(root)
        monkeypatch.setenv("LEDGERFLOW_PROJECT", str(root / "ledgerflow.yaml"))
        return root / "ledgerflow.yaml"
    return make


def bt_requests(stand) -> int:
    return stand.stats()["by_prefix"].get("/v1/balance_transactions", {}).get("requests", 0)


def put(app, ev) -> str:
    app.store.add_event(ev, jsonio.dumps(ev), "test")
    return ev["id"]


def rows_for(app, event_id):
    return app.store.deliveries_where(deliveries.c.event_id == event_id)


def deliver(app, ids, *, later: float = 0.0):
    """The delivery loop's step for these rows (claimed as due ``later`` seconds from now)."""
    return deliver_rows(app, app.store.claim("w", ids=ids, now=time.time() + later), worker="w")


# ---- fetched once, cached in the store, scoped to the connected account --------------------------

def test_balance_transaction_is_fetched_once_and_cached_in_the_store(stand, make_project):
    stand.add(txn(1))
    path = make_project(stand.url, {"postings": POSTINGS_FLOW})
    app = App(load_project(path))
    ev = charge_event(1)
    [op] = app.plan_event(ev, app.flow("postings"))
    assert (op.route, op.connection) == ("platform", "csv")          # the seller's books are not the platform's
    assert {k: str(op.payload[k]) for k in ("key", "kind", "books", "gross", "fee", "net", "currency")} == \
        {"key": "ch_pr000001", "kind": "charge", "books": "platform", "gross": "100.00", "fee": "3.20",
         "net": "96.80", "currency": "USD"}
    assert op.idempotency_key == "postings:platform:ch_pr000001"     # the movement's id, not the event's
    assert op.posting["balance_transaction"] == "txn_pr000001"
    assert bt_requests(stand) == 1
    app.plan_event(ev, app.flow("postings"))
    assert bt_requests(stand) == 1                                  # the same App: memo
    other = App(load_project(path))                                  # another worker: the store's cache
    [again] = other.plan_event(ev, other.flow("postings"))
    assert again.payload == op.payload and bt_requests(stand) == 1


def test_the_dispatcher_builds_each_events_posting_once_for_all_its_flows(stand, make_project):
    """Two flows book the same charge: one posting per event, shared (never another event's)."""
    for n in (21, 22):
        stand.add(txn(n, amount=1000 * n))
    path = make_project(stand.url, {"postings": POSTINGS_FLOW, "postings-again": POSTINGS_FLOW.replace(
        "name: postings", "name: postings-again")})
    app = App(load_project(path))
    built = []
    real = app.postings.for_event
    app.postings.for_event = lambda event, pinned=None: built.append(event["id"]) or real(event, pinned)
    ids = [put(app, charge_event(n, amount=1000 * n)) for n in (21, 22)]
    s = dispatch_pending(app)
    assert (s.dispatched, s.new_deliveries) == (2, 4)
    assert sorted(built) == ids                                     # once per event, not once per flow
    for n, eid in zip((21, 22), ids):
        rows = rows_for(app, eid)
        assert sorted(r["flow"] for r in rows) == ["postings", "postings-again"]
        assert {r["payload"]["gross"] for r in rows} == {D(10 * n).quantize(D("0.01"))}
    # one shared dict handed over for another event: that event gets its own posting
    shared: dict = {}
    built.clear()
    [a] = app.plan_event(charge_event(21, amount=21000), app.flow("postings"), shared=shared)
    [b] = app.plan_event(charge_event(22, amount=22000), app.flow("postings"), shared=shared)
    assert (a.payload["key"], b.payload["key"]) == ("ch_pr000021", "ch_pr000022") and len(built) == 2


def test_connected_account_fetch_sends_stripe_account_and_books_go_to_that_accounts_connection(stand,
                                                                                                make_project):
    stand.add(txn(2, 5000, 0), account=SELLER)          # only retrievable with Stripe-Account: SELLER
    stand.add(txn(3))
    app = App(load_project(make_project(stand.url, {"postings": POSTINGS_FLOW})))
    [op] = app.plan_event(charge_event(2, amount=5000, account=SELLER), app.flow("postings"))
    assert (op.route, op.connection, op.payload["books"], op.payload["gross"]) == ("seller", "seller_csv",
                                                                                    SELLER, D("50.00"))
    [op] = app.plan_event(charge_event(3), app.flow("postings"))
    assert (op.route, op.connection) == ("platform", "csv")
    assert bt_requests(stand) == 2 and stand.stats()["errors"] == 0


@pytest.mark.one_store
def test_a_direct_charge_on_an_account_without_its_own_books_is_booked_nowhere(stand, make_project):
    stand.add(txn(4), account="acct_1OtherSeller")
    app = App(load_project(make_project(stand.url, {"postings": POSTINGS_FLOW})))
    assert app.plan_event(charge_event(4, account="acct_1OtherSeller"), app.flow("postings")) == []


# ---- within Stripe's limit: 429s are waited out ---------------------------------------------------

def test_429s_are_waited_out_never_an_error(make_project):
    s = StripeStandin(rate_limit=3)                      # Stripe answers 3 a second; we try 50
    for n in range(10, 22):
        s.add(txn(n))
    with serve_app(s.app) as srv:
        app = App(load_project(make_project(srv.url, {"postings": POSTINGS_FLOW}, rate_limit=50)))
        ids = [put(app, charge_event(n)) for n in range(10, 22)]
        summary = dispatch_pending(app)
    assert (summary.dispatched, summary.failed) == (12, 0), summary.errors
    assert s.stats()["limited"] > 0                      # Stripe did say 429
    assert app.postings.objects.throttled == s.stats()["limited"]
    assert all(app.store.get_event(i)["status"] == "dispatched" for i in ids)
    assert app.store.count_deliveries() == 12


# ---- failures contained in plan rows -------------------------------------------------------------

def test_stripe_5xx_plan_row_is_retried_and_other_flows_rows_are_written_at_once(stand, make_project):
    stand.add(txn(30))
    app = App(load_project(make_project(stand.url, {"postings": POSTINGS_FLOW, "raw": RAW_FLOW})))
    stand.inject(500, count=10_000, path_prefix="/v1/balance_transactions")
    eid = put(app, charge_event(30))
    s = dispatch_pending(app)
    assert s.failed == 1 and "flow postings:" in s.errors[eid] and "500" in s.errors[eid]
    rows = {r["flow"]: r for r in rows_for(app, eid)}
    assert rows["raw"]["state"] == "pending" and rows["raw"]["connection"] == "csv"     # not held up
    plan = rows["postings"]
    assert (plan["connection"], plan["state"], plan["idempotency_key"]) == ("(plan)", "pending",
                                                                           f"plan:postings:{eid}")
    # the delivery loop re-plans it: Stripe still fails -> retried later (transient), not dead
    report = deliver(app, [plan["id"]])
    assert [r["id"] for r in report.retried] == [plan["id"]] and not report.dead
    assert app.store.delivery(plan["id"])["state"] == "retrying"
    # Stripe is back: the next attempt plans it and writes the flow's row
    stand._faults.clear()
    report = deliver(app, [plan["id"]], later=3600)
    assert [r["id"] for r in report.sent] == [plan["id"]]
    rows = [r for r in rows_for(app, eid) if r["flow"] == "postings" and r["connection"] != "(plan)"]
    assert [(r["route"], r["idempotency_key"], r["state"]) for r in rows] == \
        [("platform", "postings:platform:ch_pr000030", "pending")]
    assert str(rows[0]["payload"]["gross"]) == "100.00"


def test_unreachable_stripe_is_transient(make_project):
    app = App(load_project(make_project(f"http://127.0.0.1:{free_port()}", {"postings": POSTINGS_FLOW})))
    eid = put(app, charge_event(31))
    s = dispatch_pending(app)
    assert s.failed == 1
    [plan] = rows_for(app, eid)
    report = deliver(app, [plan["id"]])
    assert [r["id"] for r in report.retried] == [plan["id"]] and not report.dead


BROKEN_MAPPING = 'key: "{{ posting.key }}"\norder: "{{ charge.metadata.order_id }}"\n'
BROKEN_FLOW = POSTINGS_FLOW.replace("name: postings", "name: broken").replace(
    "mappings/row.yaml", "mappings/broken.yaml")


def _dead_plan_row(stand, slack, make_project, monkeypatch):
    """A flow whose mapping reads a field the charge lacks: its plan row, dead-lettered by the delivery loop."""
    monkeypatch.setenv("TEST_SLACK_WEBHOOK", slack.url + WEBHOOK_PATH)
    stand.add(txn(40))
    path = make_project(stand.url, {"broken": BROKEN_FLOW, "raw": RAW_FLOW}, mappings={"broken.yaml": BROKEN_MAPPING},
                        slack_url=slack.url)
    app = App(load_project(path))
    eid = put(app, charge_event(40))
    s = dispatch_pending(app)
    assert s.failed == 1
    where = re.search(r"mappings/broken\.yaml:\d+:\d+", s.errors[eid])
    assert where, s.errors[eid]
    plan = next(r for r in rows_for(app, eid) if r["connection"] == "(plan)")
    assert [r["flow"] for r in rows_for(app, eid) if r["connection"] != "(plan)"] == ["raw"]   # not held up
    report = deliver(app, [plan["id"]])
    return app, eid, plan, where.group(0), report


def test_mapping_error_plan_row_is_dead_lettered_with_the_place_and_alerted(stand, slack, make_project,
                                                                            monkeypatch):
    from runner.deliver.alerts import alert_dead_letters
    app, eid, plan, where, report = _dead_plan_row(stand, slack, make_project, monkeypatch)
    assert [r["id"] for r in report.dead] == [plan["id"]] and not report.retried
    dead = app.store.delivery(plan["id"])
    assert dead["state"] == "dead" and where in dead["last_error"]
    assert f"ledgerflow dlq replay {plan['id']}" in dead["last_error"]
    assert alert_dead_letters(app, report.dead) == 1
    [msg] = slack.messages
    assert "Planning failed: broken" in msg["text"] and where in slack.texts()[0]


def test_dlq_replay_of_a_plan_row_after_the_fix_plans_it_and_repeats_nothing(stand, slack, make_project,
                                                                             monkeypatch, prefect_api):
    """``dlq replay`` delivers through the session's Prefect API (not a project server of its own)."""
    app, eid, plan, where, report = _dead_plan_row(stand, slack, make_project, monkeypatch)
    write(app.project.dir, "mappings/broken.yaml", 'key: "{{ posting.key }}"\n')
    assert main(["dlq", "replay", str(plan["id"])]) == 0
    if app.store.delivery(plan["id"])["state"] != "sent":       # the CLI may deliver it at once
        deliver(app, [plan["id"]])
    assert app.store.delivery(plan["id"])["state"] == "sent"
    booked = [r for r in rows_for(app, eid) if r["connection"] != "(plan)"]
    assert sorted((r["flow"], r["idempotency_key"]) for r in booked) == \
        [("broken", "broken:platform:ch_pr000040"), ("raw", f"raw:line:{eid}")]
    # re-dispatching the failed event repeats nothing either
    app.flows(reload=True)
    s = dispatch_pending(app, statuses=(app.store.get_event(eid)["status"],))
    assert (s.events, s.failed, s.new_deliveries) == (1, 0, 0)
    assert len([r for r in rows_for(app, eid) if r["connection"] != "(plan)"]) == 2
    assert bt_requests(stand) == 1


def test_the_serve_delivery_loop_claims_plan_rows(make_project):
    from runner.deliver.worker import DeliveryLoop
    app = App(load_project(make_project(f"http://127.0.0.1:{free_port()}", {"postings": POSTINGS_FLOW})))
    eid = put(app, charge_event(50))
    dispatch_pending(app)
    [plan] = rows_for(app, eid)
    assert plan["connection"] == "(plan)"
    loop = DeliveryLoop(app, worker="w-test")
    assert plan["id"] in loop.claim()


# ---- look-ups are lazy -----------------------------------------------------------------------------

LAZY_FLOW = """\
name: bhd-charges
trigger: {stripe: [charge.succeeded]}
lookups:
  ecb: {fx: {from: "{{ charge.currency }}", to: "{{ settings.home_currency }}", on: "{{ charge.created | date }}"}}
routes:
  - name: booked
    target: csv
    action: row
    mapping: {key: "{{ posting.key }}", gross: "{{ posting.gross }}", rate: "{{ posting.exchange_rate }}"}
  - name: never
    when: "{{ charge.currency == 'xxx' }}"
    target: csv
    action: row
    mapping: {rate: "{{ ecb.rate }}"}
"""


def test_a_lookup_no_firing_route_reads_is_never_asked_for(stand, make_project, monkeypatch):
    from runner.core import fx
    asked = []
    real = fx.provider

    def spy(name, *a, **kw):
        asked.append(name)
        return real(name, *a, **kw)
    monkeypatch.setattr("runner.language.lookups.provider", spy)
    # a BHD charge settled in USD at Stripe's rate; the ECB has no BHD rate
    stand.add(txn(60, 85868, 2520, exchange_rate=2.6596))
    app = App(load_project(make_project(stand.url, {"bhd-charges": LAZY_FLOW})))
    ev = charge_event(60, amount=322860, currency="bhd")
    [op] = app.plan_event(ev, app.flow("bhd-charges"))
    assert {k: str(v) for k, v in op.payload.items()} == {"key": "ch_pr000060", "gross": "858.68",
                                                          "rate": "2.6596"} and asked == []
    # the route that reads it does ask, and the ECB's missing rate is then the error
    ev["data"]["object"]["currency"] = "xxx"
    with pytest.raises(Exception, match="lookups.ecb"):
        app.plan_event(ev, app.flow("bhd-charges"))
    assert asked == ["ecb"]


# ---- validate: each movement booked once per set of books -------------------------------------------

CHARGE_FLOW = """\
name: {name}
trigger:
  stripe:
    - {etype}
routes:
  - name: row
    target: csv
    action: row
    mapping: mappings/row.yaml
"""


@pytest.mark.one_store
def test_validate_refuses_two_flows_booking_one_charge_into_one_connection(stand, make_project):
    path = make_project(stand.url, {
        "a-charges": CHARGE_FLOW.format(name="a-charges", etype="charge.succeeded"),
        "b-intents": CHARGE_FLOW.format(name="b-intents", etype="payment_intent.succeeded")})
    problems, _ = validate_paths([str(path.parent)])
    text = [str(p) for p in problems]
    hits = [t for t in text if "books charge movements into connection 'csv'" in t]
    assert len(hits) == 1, text
    assert "a-charges" in hits[0] and "b-intents" in hits[0]
    assert re.match(r"^flows/b-intents\.yaml:4:7: ", hits[0]) or re.search(r"b-intents\.yaml:4:7", hits[0]), hits[0]


@pytest.mark.one_store
def test_validate_refuses_a_posting_flow_on_charge_refunded(stand, make_project):
    path = make_project(stand.url, {"refunds": CHARGE_FLOW.format(name="refunds", etype="charge.refunded"),
                                    "raw": RAW_FLOW})
    problems, _ = validate_paths([str(path.parent)])
    text = [str(p) for p in problems]
    assert any(re.search(r"refunds\.yaml:4:7: trigger\.stripe\[0\]: charge\.refunded is not a money movement", t)
               and "cumulative" in t for t in text), text


@pytest.mark.one_store
def test_validate_refuses_a_lone_posting_flow_on_charge_refunded(stand, make_project):
    path = make_project(stand.url, {"refunds": CHARGE_FLOW.format(name="refunds", etype="charge.refunded")})
    problems, _ = validate_paths([str(path.parent / "flows" / "refunds.yaml")])
    assert any("charge.refunded is not a money movement" in str(p) for p in problems)


@pytest.mark.one_store
def test_validate_accepts_one_flow_per_connection(stand, make_project):
    path = make_project(stand.url, {
        "a-charges": CHARGE_FLOW.format(name="a-charges", etype="charge.succeeded"),
        "b-intents": CHARGE_FLOW.format(name="b-intents", etype="payment_intent.succeeded").replace(
            "target: csv", "target: seller_csv")})
    problems, _ = validate_paths([str(path.parent)])
    assert not [p for p in problems if "booked twice" in str(p)], problems


@pytest.mark.one_store
def test_validate_refuses_account_books_that_would_silently_skip_movements(stand, make_project):
    path = make_project(stand.url, {"a-charges": CHARGE_FLOW.format(name="a-charges", etype="charge.succeeded")})
    text = path.read_text().replace(f"account_books: {{{SELLER}: seller_csv}}",
                                    f"account_books: {{{SELLER}: seller_csv, acct_1Other: seller_csv, "
                                    "acct_1Third: no_such_books}")
    path.write_text(text)
    problems = [str(p) for p in validate_paths([str(path.parent)])[0]]
    assert any("acct_1Other: connection 'seller_csv' already holds" in p and "ledgerflow.yaml:" in p
               for p in problems), problems
    assert any("acct_1Third: no connection named 'no_such_books'" in p for p in problems), problems
