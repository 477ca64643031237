"""`ledgerflow test`: shipped cases, failures naming the mapping line, --update, JUnit, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runner.cli import main
from tests.conftest import ROOT

ROOT = Path(__file__).resolve().parent.parent



TOOLING = ROOT / "tests" / "fixtures" / "flowtest_tooling"


@pytest.fixture(autouse=True)
def tooling_flows(request):
    """The tooling's fixture flows (tests/fixtures/flowtest_tooling), laid over the project copy."""
    if "project_dir" in request.fixturenames and "shipped" not in request.node.name:
        import shutil
        shutil.copytree(TOOLING, request.getfixturevalue("project_dir"), dirs_exist_ok=True)

def run(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["test", *argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


# ---- the shipped flows ----------------------------------------------------------------

def test_shipped_flow_tests_pass(project_dir, stripe_fixtures, capsys):
    rc, out = run(capsys, "flows/")
    assert rc == 0, out
    assert re.search(r"^flows: (\d+) passed, 0 failed$", out, re.M)
    assert "FAIL" not in out and "ERROR" not in out


def test_every_route_of_every_shipped_flow_has_a_case(project_dir, stripe_fixtures):
    """Each shipped flow's routes fire in at least one case, and USD, JPY and BHD and Connect are covered."""
    from runner.app import App
    from runner.language.flowtest.load import FlowIndex, load_all
    app = App()
    files, problems = load_all([project_dir / "flows"], FlowIndex(app.project))
    assert not problems and not any(tf.problems for tf in files)
    cases = [c for tf in files for c in tf.cases]
    assert cases and not any(c.problems for c in cases)
    covered = {(c.flow.name, e.route) for c in cases for e in c.expect}
    for name, flow in app.flows().items():
        for route in flow.routes:
            assert (name, route.name) in covered, f"no flow test fires {name}:{route.name}"
        currencies = {c.event["data"]["object"].get("currency") for c in cases if c.flow.name == name}
        assert "usd" in currencies, (name, currencies)                             # the home currency
        if "charge.succeeded" in flow.stripe_types:
            assert {"usd", "jpy", "bhd"} <= currencies, (name, currencies)       # sales: 0, 2, 3 decimals
        if "charge.succeeded" in flow.stripe_types:      # a connected account's direct charge is not ours
            assert any(c.event.get("account") for c in cases if c.flow.name == name), f"{name}: no Connect case"


def test_a_changed_amount_in_a_mapping_fails_naming_the_mapping_line_and_update_repairs_it(
        project_dir, stripe_fixtures, capsys):
    mapping = project_dir / "mappings" / "csv" / "charge_bank_line.yaml"
    text = mapping.read_text()
    amount_line = next(i for i, l in enumerate(text.splitlines(), 1) if l.startswith("Amount:"))
    mapping.write_text(text.replace("charge.amount | money", "(charge.amount + 100) | money"))
    tests_file = project_dir / "flows" / "tests" / "stripe-charges-to-csv.yaml"
    before = tests_file.read_text()

    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert f"Amount  <- mappings/csv/charge_bank_line.yaml:{amount_line}:9" in out
    assert "- expected 20.0\n" in out and "+ actual   21.00\n" in out       # USD: 2000 + 100 cents
    assert "+ actual   5100\n" in out                                       # JPY: whole yen
    assert re.search(r"^FAIL  flows/tests/stripe-charges-to-csv.yaml:\d+: a USD charge", out, re.M)
    assert "0 failed" not in out

    rc, out = run(capsys, "flows/tests/stripe-charges-to-csv.yaml", "--update")
    assert rc == 0, out
    # the diff is shown before the file is written
    assert out.index("--- flows/tests/stripe-charges-to-csv.yaml (before)") < out.index("updated flows/tests/")
    assert "-          Amount: 20.00\n" in out and "+          Amount: 21.00\n" in out
    after = tests_file.read_text()
    assert "Amount: 21.00" in after and "payload: {Amount: 5100}" in after and 'Amount: "12.440"' in after
    # everything but the changed values is kept: comments, quoting, flow style, order
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    assert all("Amount" in a and "Amount" in b for a, b in changed), changed
    assert "# 1234567890 is 23:31 UTC, still the 13th in New York" in after

    rc, out = run(capsys, "flows/")
    assert rc == 0, out


def test_update_adds_a_route_that_now_fires_and_drops_one_that_no_longer_does(project_dir, stripe_fixtures, capsys):
    tf = project_dir / "flows" / "tests" / "stripe-payouts-to-iif.yaml"
    text = tf.read_text()
    text = text.replace("      set: {amount: 0}\n    expect: []", "      set: {amount: 0}\n    expect:  # was empty\n"
                        "      - route: transfer\n        payload: {amount: 1}")
    text = text.replace("      set: {amount: 150000, currency: jpy, status: paid}\n    expect:\n"
                        "      - route: transfer\n        payload: {amount: 150000}",
                        "      set: {amount: 150000, currency: jpy, status: paid}\n    expect: []")
    tf.write_text(text)
    rc, out = run(capsys, str(tf))
    assert rc == 1
    assert "route transfer (iif.transfer): fired, but is not expected" in out
    assert "route transfer: expected to fire, but did not" in out
    rc, out = run(capsys, str(tf), "--update")
    assert rc == 0, out
    fixed = tf.read_text()
    assert "set: {amount: 0}\n    expect: [] # was empty\n" in fixed
    jpy = fixed.split("a JPY payout")[1].split("- name:")[0]
    assert "- route: transfer" in jpy and "amount: 150000" in jpy and "to_account: Operating Bank" in jpy


def test_junit_report(project_dir, stripe_fixtures, capsys, tmp_path):
    mapping = project_dir / "mappings" / "iif" / "payout_transfer.yaml"
    mapping.write_text(mapping.read_text().replace("payout.amount | money", "(payout.amount * 2) | money"))
    report = tmp_path / "reports" / "flows.xml"
    rc, _ = run(capsys, "flows/", "--junit", str(report))
    assert rc == 1
    root = ET.parse(report).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    payouts = suites["flows/tests/stripe-payouts-to-iif.yaml"]
    assert payouts.get("failures") == str(len(payouts.findall("testcase")) - 1)   # all but the zero payout
    failure = payouts.find("testcase/failure")
    assert "payload differs" in failure.get("message")
    assert "mappings/iif/payout_transfer.yaml:5:9" in failure.text
    assert suites["flows/tests/stripe-charges-to-csv.yaml"].get("failures") == "0"
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites.values())


def test_cases_filtered_by_name(project_dir, stripe_fixtures, capsys):
    rc, out = run(capsys, "flows/", "-k", "bhd")
    assert rc == 0
    assert out.count("PASS") >= 6 and "BHD" in out and " 0 failed" in out
    assert all("BHD" in l for l in out.splitlines() if l.startswith("PASS"))


def test_help_stays_light():
    code = ("import sys, runner.cli; runner.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith(('ruamel', 'jsonschema', "
            "'runner.language.flowtest', 'prefect'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_flow_schema_tests_items_are_flow_test_cases():
    flow = json.loads((ROOT / "runner" / "language" / "schema" / "flow.schema.json").read_text())
    cases = json.loads((ROOT / "runner" / "language" / "schema" / "flowtest.schema.json").read_text())
    assert flow["properties"]["tests"]["items"] == cases["$defs"]["case"]


def test_shipped_test_files_round_trip_unchanged():
    """--update edits through ruamel round-trip; our layout must survive it byte for byte."""
    import io

    from runner.language.flowtest.update import _yaml
    for f in sorted((ROOT / "flows" / "tests").glob("*.yaml")):
        text = f.read_text()
        y = _yaml(text)
        buf = io.StringIO()
        y.dump(y.load(text), buf)
        assert buf.getvalue() == text, f


# ---- a small project for the rest -------------------------------------------------------

PROJECT = """\
settings: {home_currency: USD, timezone: UTC}
vars: {clearing_account: Stripe Clearing}
connections:
  csv: {type: csv, directory: out/csv}
  iif: {type: iif, directory: out/iif}
"""

FX_FLOW = """\
name: fx-charges
trigger: {stripe: [charge.succeeded]}
lookups:
  rate: {fx: {from: "{{ charge.currency }}", to: "{{ settings.home_currency }}", on: "{{ charge.created | date }}"}}
routes:
  - name: home
    when: "{{ charge.currency != 'usd' }}"
    target: csv
    action: row
    mapping:
      amount: "{{ (charge.amount | money(charge.currency)) * rate.rate }}"
      rate_source: "{{ rate.source }}"
      pair: "{{ rate.base ~ '/' ~ rate.quote }}"
  - name: plain
    fallback: true
    target: csv
    action: qbo_bank_row
    mapping:
      Date: "{{ charge.created | date }}"
      Description: "{{ charge.id }}"
      Amount: "{{ charge.amount | money(charge.currency) }}"
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    d = tmp_path / "tiny"
    (d / "flows" / "tests" / "events").mkdir(parents=True)
    (d / "ledgerflow.yaml").write_text(PROJECT)
    (d / "flows" / "fx-charges.yaml").write_text(FX_FLOW)
    monkeypatch.chdir(d)
    monkeypatch.setenv("LEDGERFLOW_PROJECT", str(d / "ledgerflow.yaml"))
    return d


def inline_event(amount: int, currency: str) -> str:
    return json.dumps({"id": "evt_1", "type": "charge.succeeded",
                       "data": {"object": {"object": "charge", "id": "ch_1", "amount": amount,
                                           "currency": currency, "created": 1700000000}}})


def write_cases(d: Path, body: str, name: str = "cases.yaml") -> Path:
    f = d / "flows" / "tests" / name
    f.write_text(body)
    return f


def test_pinned_fx_rate_and_routes(tiny, capsys):
    write_cases(tiny, f"""\
flow: fx-charges
cases:
  - name: euros convert at the pinned rate
    event: {inline_event(1000, "eur")}
    lookups: {{rate: "1.0834"}}
    expect:
      - route: home
        match: exact
        payload: {{amount: "10.834000", rate_source: pinned, pair: EUR/USD}}
  - name: dollars take the fallback route
    event: {inline_event(1000, "usd")}
    lookups: {{rate: {{rate: "1", source: ecb}}}}
    expect:
      - route: plain
        payload: {{Amount: 10}}
""")
    rc, out = run(capsys, "flows/")
    assert rc == 0, out
    assert "2 passed" in out


def test_a_route_that_fires_unexpectedly_fails(tiny, capsys):
    write_cases(tiny, f"""\
flow: fx-charges
cases:
  - name: wrong route
    event: {inline_event(1000, "eur")}
    lookups: {{rate: "2"}}
    expect:
      - route: plain
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert "route plain: expected to fire, but did not" in out
    assert "route home (csv.row): fired, but is not expected" in out
    assert '+ {"amount": 20.00, "rate_source": "pinned", "pair": "EUR/USD"}' in out


def test_a_render_error_is_a_case_error_naming_the_mapping(tiny, capsys):
    write_cases(tiny, """\
flow: fx-charges
cases:
  - name: no currency
    event: {id: evt_2, type: charge.succeeded, data: {object: {object: charge, id: ch_2, amount: 5, created: 1}}}
    lookups: {rate: "1"}
    expect: []
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert re.search(r"^ERROR flows/tests/cases.yaml:3: no currency", out, re.M)
    assert "planning failed: flows/fx-charges.yaml:" in out


# ---- bad input: each a clear error with file, line and column ---------------------------

def test_a_case_naming_a_missing_flow(tiny, capsys):
    write_cases(tiny, f"""\
cases:
  - name: typo in the flow name
    flow: fx-charge
    event: {inline_event(1, "usd")}
    expect: []
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert ("flows/tests/cases.yaml:3:11: flow: no flow 'fx-charge' in " in out
            and "(known flows: fx-charges; or give a flow file path)" in out), out
    assert "1 case(s) or file(s) could not run\nflows: 0 passed, 1 failed" in out


def test_a_file_level_default_flow_that_is_missing_points_at_it(tiny, capsys):
    write_cases(tiny, f"""\
flow: flows/nope.yaml
cases:
  - name: a
    event: {inline_event(1, "usd")}
    expect: []
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert "flows/tests/cases.yaml:1:7: flow: no flow 'flows/nope.yaml'" in out


def test_an_event_file_that_is_not_json(tiny, capsys):
    (tiny / "flows" / "tests" / "events" / "broken.json").write_text('{"id": "evt_1",\n  "type": charge.succeeded}\n')
    write_cases(tiny, """\
flow: fx-charges
cases:
  - name: broken event file
    event: events/broken.json
    expect: []
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    line = next(l for l in out.splitlines() if "not JSON" in l)
    assert line.strip().startswith("flows/tests/cases.yaml:4:12: event: ")
    assert "events/broken.json:2:11: not JSON: Expecting value" in line


def test_an_event_file_that_is_missing(tiny, capsys):
    write_cases(tiny, """\
flow: fx-charges
cases:
  - name: no file
    event: events/nowhere.json
    expect: []
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert "flows/tests/cases.yaml:4:12: event: " in out and "nowhere.json: event file not found" in out


def test_an_expected_field_the_action_does_not_have(tiny, capsys):
    write_cases(tiny, f"""\
flow: fx-charges
cases:
  - name: typo in a field
    event: {inline_event(1000, "usd")}
    expect:
      - route: plain
        payload:
          Amount: 10
          Amuont: 10
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert ("flows/tests/cases.yaml:9:19: expect[0].payload.Amuont: action csv.qbo_bank_row (route plain) "
            "has no field 'Amuont' (expected one of: Amount, Date, Description)") in out


def test_unknown_route_lookup_and_key_are_errors_with_positions(tiny, capsys):
    write_cases(tiny, f"""\
flow: fx-charges
cases:
  - name: several mistakes
    event: {inline_event(1000, "usd")}
    lookups: {{fx: "1"}}
    expect:
      - route: nope
        paylod: {{}}
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert "flows/tests/cases.yaml:8:17: cases[0].expect[0]: unknown key 'paylod' (expected one of: " in out
    write_cases(tiny, f"""\
flow: fx-charges
cases:
  - name: several mistakes
    event: {inline_event(1000, "usd")}
    lookups: {{fx: "1"}}
    expect:
      - route: nope
""")
    rc, out = run(capsys, "flows/")
    assert "flows/tests/cases.yaml:5:19: lookups.fx: flow fx-charges has no look-up 'fx' (its look-ups: rate)" in out
    assert "flows/tests/cases.yaml:7:16: expect[0].route: flow fx-charges has no route 'nope' (its routes: home, plain)" in out


def test_a_malformed_fixture_reference(tiny, capsys):
    write_cases(tiny, """\
flow: fx-charges
cases:
  - name: fixture typo
    event: {from_fixture: charge.succeeded, sett: {amount: 1}}
    expect: []
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert "flows/tests/cases.yaml:4:12: cases[0].event: unknown key(s) 'sett' (expected one of: account, created, " \
           "from_fixture, resource, set)" in out


def test_malformed_yaml_and_missing_paths(tiny, capsys):
    write_cases(tiny, "cases:\n  - name: [unclosed\n")
    rc, out = run(capsys, "flows/", "flows/tests/missing.yaml")
    assert rc == 1
    assert re.search(r"ERROR flows/tests/cases.yaml:\d+:\d+: malformed YAML", out)
    assert "ERROR flows/tests/missing.yaml:1:1: no such file or folder" in out


# ---- tests: inside a flow file ----------------------------------------------------------------

def test_inline_tests_in_a_flow_file(tiny, capsys):
    flow = tiny / "flows" / "fx-charges.yaml"
    flow.write_text(FX_FLOW + f"""\
tests:
  - name: inline dollars
    event: {inline_event(250, "usd")}
    expect:
      - route: plain
        payload: {{Amount: "2.50"}}
""")
    rc, out = run(capsys)
    assert rc == 0, out
    assert re.search(r"^PASS  flows/fx-charges.yaml:\d+: inline dollars \[fx-charges\]$", out, re.M)
    flow.write_text(flow.read_text().replace('{Amount: "2.50"}', '{Amount: "2.05"}'))
    rc, out = run(capsys, str(flow), "--update")
    assert rc == 0, out
    assert '{Amount: "2.50"}' in flow.read_text() and flow.read_text().startswith(FX_FLOW)


def test_inline_tests_are_checked_by_validate_and_take_no_flow(tiny, capsys):
    flow = tiny / "flows" / "fx-charges.yaml"
    flow.write_text(FX_FLOW + "tests:\n  - name: incomplete\n    expect: []\n")
    assert main(["validate"]) == 1
    assert "fx-charges.yaml:23:5: tests[0]: 'event' is a required property" in capsys.readouterr().out
    flow.write_text(FX_FLOW + f"tests:\n  - name: x\n    flow: other\n    event: {inline_event(1, 'usd')}\n    expect: []\n")
    rc, out = run(capsys, str(flow))
    assert rc == 1
    assert "fx-charges.yaml:24:11: flow: a test inside a flow file runs that flow" in out


def test_validate_still_skips_the_tests_folder(tiny, capsys):
    write_cases(tiny, "cases: this is not a flow\n")
    assert main(["validate"]) == 0


def test_expected_planning_errors_and_var_overrides(tiny, capsys):
    write_cases(tiny, f"""\
flow: fx-charges
cases:
  - name: a missing rate is refused
    event: {{id: evt_2, type: charge.succeeded, data: {{object: {{object: charge, id: ch_2, amount: 5, created: 1}}}}}}
    lookups: {{rate: "1"}}
    error: "undefined"
  - name: but a good event is not an error
    event: {inline_event(1000, "usd")}
    lookups: {{rate: "1"}}
    error: "undefined"
""")
    rc, out = run(capsys, "flows/")
    assert rc == 1
    assert re.search(r"^PASS  flows/tests/cases.yaml:3: a missing rate is refused", out, re.M)
    assert "plan: expected planning to fail with 'undefined', but it produced 1 operation(s): ['plain']" in out
    (tiny / "flows" / "fx-charges.yaml").write_text(FX_FLOW.replace('when: "{{ charge.currency != \'usd\' }}"',
                                                                    'when: "{{ vars.convert }}"') + "vars: {convert: false}\n")
    write_cases(tiny, f"""\
flow: fx-charges
cases:
  - name: the flow's var turned on for this case
    vars: {{convert: true}}
    event: {inline_event(1000, "usd")}
    lookups: {{rate: "1"}}
    expect: [{{route: home}}]
  - name: and left as it is
    event: {inline_event(1000, "usd")}
    lookups: {{rate: "1"}}
    expect: [{{route: plain}}]
""")
    rc, out = run(capsys, "flows/")
    assert rc == 0, out
