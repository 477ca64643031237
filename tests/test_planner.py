"""plan(event, flow, context): pure, deterministic, Decimal money, errors that point at the mapping."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runner.app import App
from runner.core.errors import EventError, RenderError
from runner.language.events import parse_event
from runner.language.planner import plan
from runner.language.spec import load_project

from .helpers_project import charge_event, make_project, write

FLOW = """\
name: charges
trigger: {stripe: ["charge.succeeded"]}
filter: "{{ charge.paid }}"
lookups:
  rate: {fx: {from: "{{ charge.currency }}", to: "{{ settings.home_currency }}", on: "{{ charge.created | date }}"}}
routes:
  - name: platform
    when: "{{ account is none }}"
    target: csv
    action: row
    mapping: mappings/row.yaml
  - name: big
    when: "{{ charge.amount >= 100000 }}"
    target: csv
    action: row
    mapping: mappings/row.yaml
    idempotency_key: "big-{{ charge.id }}"
  - name: other
    fallback: true
    target: iif
    action: journal
    mapping: mappings/journal.yaml
"""
ROW = """\
id: "{{ charge.id }}"
date: "{{ charge.created | date }}"
amount: "{{ charge.amount | money(charge.currency) }}"
home: "{{ (charge.amount | money(charge.currency)) * rate.rate }}"
currency: "{{ charge.currency | upper }}"
memo?: "{{ charge.description or '' }}"
note?: "{{ charge.metadata.get('note') }}"
"""
JOURNAL = """\
date: "{{ charge.created | date }}"
memo: "Connect charge for {{ account }}"
lines:
  - $for: split in charge.metadata.splits
    $if: "{{ split.amount != 0 }}"
    $each:
      account: "{{ split.account }}"
      amount: "{{ split.amount | money(charge.currency) }}"
  - account: "{{ vars.clearing_account }}"
    amount: "{{ (charge.amount | money(charge.currency)) | negate }}"
"""


@pytest.fixture
def app(tmp_path, monkeypatch):
    make_project(tmp_path)
    write(tmp_path, "flows/charges.yaml", FLOW)
    write(tmp_path, "mappings/row.yaml", ROW)
    write(tmp_path, "mappings/journal.yaml", JOURNAL)
    monkeypatch.chdir(tmp_path)
    return App(load_project(tmp_path / "ledgerflow.yaml"))


def test_platform_charge_takes_the_platform_route(app):
    flow = app.flow("charges")
    ops = app.plan_event(charge_event(), flow)
    assert [o.route for o in ops] == ["platform"]
    op = ops[0]
    assert op.idempotency_key == "charges:platform:evt_test_1"
    assert op.payload == {"id": "ch_test_1", "date": "2026-01-01", "amount": Decimal("10.50"),
                          "home": Decimal("10.50"), "currency": "USD", "memo": "Order 42"}
    assert isinstance(op.payload["amount"], Decimal)
    assert "note" not in op.payload          # `?` leaves empty values out


def test_every_matching_route_runs_and_keys_can_be_templated(app):
    ops = app.plan_event(charge_event(amount=250000), app.flow("charges"))
    assert [(o.route, o.idempotency_key) for o in ops] == [("platform", "charges:platform:evt_test_1"),
                                                           ("big", "big-ch_test_1")]


def test_fallback_runs_when_no_route_did_with_loop_lines(app):
    ev = charge_event(account="acct_123", metadata={"splits": [
        {"account": "Sales", "amount": 800}, {"account": "Skip", "amount": 0}, {"account": "Shipping", "amount": 250}]})
    ops = app.plan_event(ev, app.flow("charges"))
    assert [o.route for o in ops] == ["other"]
    assert ops[0].payload["lines"] == [
        {"account": "Sales", "amount": Decimal("8.00")},
        {"account": "Shipping", "amount": Decimal("2.50")},
        {"account": "Stripe Clearing", "amount": Decimal("-10.50")},
    ]
    assert ops[0].payload["memo"] == "Connect charge for acct_123"


def test_filter_stops_the_flow(app):
    assert app.plan_event(charge_event(paid=False), app.flow("charges")) == []


def test_fx_lookup_converts_with_decimal_rate(app):
    ops = app.plan_event(charge_event(amount=1000, currency="eur"), app.flow("charges"))
    assert ops[0].payload["home"] == Decimal("11.0000")   # fixed EUR/USD 1.10, exact


def test_zero_and_three_decimal_currencies(app):
    jpy = app.plan_event(charge_event(amount=1050, currency="jpy"), app.flow("charges"))[0].payload
    bhd = app.plan_event(charge_event(amount=12340, currency="bhd", description=None),
                         app.flow("charges"))[0].payload
    assert jpy["amount"] == Decimal("1050") and jpy["currency"] == "JPY"
    assert str(jpy["home"]) == "7.0350"                     # 1050 x 0.0067, exact
    assert str(bhd["amount"]) == "12.340" and "memo" not in bhd


def test_plan_is_deterministic(app):
    flow = app.flow("charges")
    ev = charge_event()
    assert [o.as_dict() for o in app.plan_event(ev, flow)] == [o.as_dict() for o in app.plan_event(ev, flow)]


def test_event_lacking_a_field_names_the_mapping_line(app):
    ev = charge_event()
    del ev["data"]["object"]["currency"]
    with pytest.raises(RenderError) as exc:
        app.plan_event(ev, app.flow("charges"))
    # look-ups are lazy: the mapping reads charge.currency first (its file and line)
    assert str(exc.value).startswith("mappings/row.yaml:3:")
    assert "currency" in str(exc.value)


def test_missing_field_in_a_mapping(app):
    ev = charge_event()
    del ev["data"]["object"]["created"]
    flow = app.flow("charges")
    ctx = app.context(lookups={"rate": None})
    with pytest.raises(RenderError) as exc:
        plan(ev, flow, ctx)
    assert str(exc.value).startswith("mappings/row.yaml:2:7: date: undefined:"), str(exc.value)
    assert "created" in str(exc.value)


def test_non_numeric_amount_is_a_clear_error(app, tmp_path):
    write(tmp_path, "mappings/journal.yaml", JOURNAL.replace(
        '"{{ (charge.amount | money(charge.currency)) | negate }}"', '"{{ charge.description }}"'))
    app2 = App(load_project(tmp_path / "ledgerflow.yaml"))
    with pytest.raises(RenderError) as exc:
        app2.plan_event(charge_event(account="acct_1", metadata={"splits": [{"account": "Sales", "amount": 1}]}),
                        app2.flow("charges"))
    msg = str(exc.value)
    assert msg.startswith("mappings/journal.yaml:10:13: lines[1].amount: expected number, got 'Order 42'"), msg


def test_unbalanced_journal_is_refused_before_sending(app):
    ev = charge_event(account="acct_1", metadata={"splits": [{"account": "Sales", "amount": 999}]})
    with pytest.raises(RenderError, match="lines must sum to zero"):
        app.plan_event(ev, app.flow("charges"))


def test_money_filter_on_bad_amount(app, tmp_path):
    ev = charge_event(currency="dollars")
    with pytest.raises(RenderError) as exc:
        plan(ev, app.flow("charges"), app.context(lookups={"rate": None}))
    assert str(exc.value).startswith("mappings/row.yaml:3:9: amount: money: expected a three-letter ISO currency code")
    with pytest.raises(RenderError) as exc:
        plan(charge_event(amount=[10]), app.flow("charges"), app.context(lookups={"rate": None}))
    assert str(exc.value).startswith("flows/charges.yaml:13:11: routes[1].when: TypeError")


def test_sandbox_blocks_at_run_time_too(app, tmp_path):
    # a template that builds the dunder name at run time gets past the static check, not the sandbox
    write(tmp_path, "mappings/row.yaml", ROW + 'x: "{{ charge | attr(\'__cl\' ~ \'ass__\') }}"\n')
    app2 = App(load_project(tmp_path / "ledgerflow.yaml"))
    with pytest.raises(RenderError) as exc:
        app2.plan_event(charge_event(), app2.flow("charges"))
    assert str(exc.value).startswith("mappings/row.yaml:8:4: x:") and "sandbox" in str(exc.value)


@pytest.mark.parametrize("raw,expected", [
    ("not json", "ev.json:1:1: not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"id": "evt_1", "type": "charge.succeeded"}', "no data.object"),
    ('{"type": "charge.succeeded", "data": {"object": {}}}', "no 'id'"),
])
def test_bad_event_files(raw, expected):
    with pytest.raises(EventError, match=expected):
        parse_event(raw, "ev.json")


def test_event_json_floats_become_decimals():
    ev = parse_event('{"id": "e", "type": "t", "data": {"object": {"exchange_rate": 0.8932}}}', "x")
    assert ev["data"]["object"]["exchange_rate"] == Decimal("0.8932")


def test_two_expressions_in_one_leaf_render_as_text(tmp_path):
    from runner.language.templating import Compiled, environment
    c = Compiled(environment(), "{{ a }}/{{ b }}")
    assert c({"a": 1, "b": 2}) == "1/2"
    assert Compiled(environment(), "{{ {'x': {'y': 1}} }}")({}) == {"x": {"y": 1}}
