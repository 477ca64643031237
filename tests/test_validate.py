"""`ledgerflow validate`: every problem as file:line:col, exit 1; exit 0 when all is well."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.cli import main
from runner.core.errors import SpecError
from runner.language.spec import load_flow, load_project

from .helpers_project import make_project, write

ROOT = Path(__file__).resolve().parent.parent

GOOD_FLOW = """\
name: charges
trigger: {stripe: ["charge.*"]}
filter: "{{ charge.paid }}"
routes:
  - name: line
    target: csv
    action: qbo_bank_row
    mapping: mappings/line.yaml
"""
GOOD_MAPPING = """\
Date: "{{ charge.created | date }}"
Description: "{{ charge.description | clip(100) }}"
Amount: "{{ charge.amount | money(charge.currency) }}"
"""


@pytest.fixture
def proj(tmp_path, monkeypatch):
    make_project(tmp_path)
    write(tmp_path, "mappings/line.yaml", GOOD_MAPPING)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGERFLOW_PROJECT", raising=False)
    return tmp_path


def problems_of(proj: Path, flow_text: str, mapping_text: str | None = None) -> list[str]:
    write(proj, "flows/f.yaml", flow_text)
    if mapping_text is not None:
        write(proj, "mappings/line.yaml", mapping_text)
    with pytest.raises(SpecError) as exc:
        load_flow(proj / "flows/f.yaml", load_project(proj / "ledgerflow.yaml"))
    return [str(p) for p in exc.value.problems]


def test_shipped_project_is_valid(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("LEDGERFLOW_PROJECT", raising=False)
    assert main(["validate"]) == 0


def test_good_flow_loads(proj):
    write(proj, "flows/f.yaml", GOOD_FLOW)
    flow = load_flow(proj / "flows/f.yaml", load_project(proj / "ledgerflow.yaml"))
    assert flow.matches("charge.succeeded") and flow.matches("charge.refunded")
    assert not flow.matches("payout.paid")


def test_malformed_yaml_names_line_and_column(proj):
    out = problems_of(proj, GOOD_FLOW.replace("routes:", "routes: [\n  oops: ]"))
    assert len(out) == 1
    assert re.match(r"flows/f\.yaml:\d+:\d+: malformed YAML", out[0]), out


def test_unknown_key_is_reported_where_it_is(proj):
    out = problems_of(proj, GOOD_FLOW + "retries: 3\n")
    assert out == ["flows/f.yaml:9:1: unknown key 'retries' in the document (expected one of: alert, description, "
                   "filter, lookups, name, reconcile, retry, routes, tests, trigger, vars)"]


def test_unknown_key_in_a_route(proj):
    out = problems_of(proj, GOOD_FLOW.replace("    action: qbo_bank_row", "    action: qbo_bank_row\n    targte: x"))
    assert any(p.startswith("flows/f.yaml:8:5: unknown key 'targte' in routes[0]") for p in out), out


def test_duplicate_key(proj):
    out = problems_of(proj, GOOD_FLOW + "name: again\n")
    assert out == ["flows/f.yaml:9:1: duplicate key 'name'"]


def test_undefined_name_in_flow_template(proj):
    out = problems_of(proj, GOOD_FLOW.replace("{{ charge.paid }}", "{{ chrage.paid }}"))
    assert len(out) == 1 and out[0].startswith("flows/f.yaml:3:9: filter: undefined name 'chrage'")


def test_undefined_name_in_mapping_points_at_the_mapping_line(proj):
    out = problems_of(proj, GOOD_FLOW, GOOD_MAPPING.replace("charge.description", "chage.description"))
    assert len(out) == 1
    assert out[0].startswith("mappings/line.yaml:2:14: Description: undefined name 'chage'"), out


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ charge.__class__ }}",
    "{{ charge['__init__'] }}",
    "{{ (charge.amount).__class__.__base__.__subclasses__() }}",
])
def test_sandbox_escape_is_a_validation_error(proj, template):
    out = problems_of(proj, GOOD_FLOW, GOOD_MAPPING.replace('"{{ charge.description | clip(100) }}"', f'"{template}"'))
    assert out and all(p.startswith("mappings/line.yaml:2:14: Description: attribute '__") for p in out), out
    assert "sandbox" in out[0]


def test_template_syntax_error(proj):
    out = problems_of(proj, GOOD_FLOW, GOOD_MAPPING.replace("| date }}", "| date }"))
    assert len(out) == 1 and out[0].startswith("mappings/line.yaml:1:7: Date: template syntax error")


def test_route_naming_a_missing_connection(proj):
    out = problems_of(proj, GOOD_FLOW.replace("target: csv", "target: quickbooks"))
    assert out == ["flows/f.yaml:6:13: routes[0].target: no connection named 'quickbooks' in ledgerflow.yaml "
                   "(known: csv, iif)"]


def test_unknown_action(proj):
    out = problems_of(proj, GOOD_FLOW.replace("action: qbo_bank_row", "action: invoice"))
    assert len(out) == 1 and "connector csv has no action 'invoice' (expected one of: journal, qbo_bank_row, row)" in out[0]


def test_mapping_checked_against_the_action_schema(proj):
    out = problems_of(proj, GOOD_FLOW, "Date: x\nDescripton: y\nAmount: '1'\n")
    assert "mappings/line.yaml:1:1: Description: required by action csv.qbo_bank_row but not mapped" in out
    assert any(p.startswith("mappings/line.yaml:2:1: Descripton: action csv.qbo_bank_row has no field 'Descripton'")
               for p in out), out


def test_missing_mapping_file(proj):
    out = problems_of(proj, GOOD_FLOW.replace("mappings/line.yaml", "mappings/nope.yaml"))
    assert len(out) == 1 and out[0].startswith("flows/f.yaml:8:14: routes[0].mapping: mapping file 'mappings/nope.yaml' not found")  # noqa: E501


@pytest.mark.parametrize("secret", ["sk_live_51Habcdefghijk", "sk_test_abcdef123456", "rk_live_abcdefgh",
                                    "whsec_abcdefghijkl"])
def test_literal_secret_in_flow_is_an_error(proj, secret):
    out = problems_of(proj, GOOD_FLOW + f"vars: {{api_key: {secret}}}\n")
    assert len(out) == 1 and "looks like a literal secret" in out[0] and secret not in out[0]


def test_literal_secret_in_mapping_and_project(proj, monkeypatch):
    out = problems_of(proj, GOOD_FLOW, GOOD_MAPPING + "Memo?: 'whsec_0123456789abcdef'\n")
    assert any(p.startswith("mappings/line.yaml:4:8:") and "literal secret" in p for p in out), out
    write(proj, "ledgerflow.yaml", (proj / "ledgerflow.yaml").read_text() + "  qbo: {type: csv, token: sk_live_abcdefgh12}\n")
    with pytest.raises(SpecError) as exc:
        load_project(proj / "ledgerflow.yaml")
    assert "literal secret" in str(exc.value) and "ledgerflow.yaml:11:27:" in str(exc.value)


def test_float_literal_in_mapping_is_refused(proj):
    out = problems_of(proj, GOOD_FLOW, GOOD_MAPPING.replace('"{{ charge.amount | money(charge.currency) }}"', "10.5"))
    assert len(out) == 1 and "quoted strings" in out[0] and out[0].startswith("mappings/line.yaml:3:9:")


def test_bad_cron_and_timezone(proj):
    flow = GOOD_FLOW.replace('trigger: {stripe: ["charge.*"]}',
                             "trigger:\n  schedule: {cron: '61 * * * *', timezone: Mars/Base}")
    out = problems_of(proj, flow)
    assert any("trigger.schedule.cron" in p for p in out) and any("unknown time zone 'Mars/Base'" in p for p in out)


def test_the_inert_manual_trigger_is_ignored_with_a_warning_where_it_is(proj, caplog):
    """``trigger.manual`` never did anything (any flow runs by hand). Flows copied from the shipped
    ones carry it, so for one release it is ignored with a warning naming its line and saying to
    delete it (refusing it outright would stop every flow of an upgraded project at once)."""
    flow = GOOD_FLOW.replace('trigger: {stripe: ["charge.*"]}', 'trigger:\n  stripe: ["charge.*"]\n  manual: true')
    write(proj, "flows/f.yaml", flow)
    loaded = load_flow(proj / "flows/f.yaml", load_project(proj / "ledgerflow.yaml"))
    assert loaded.stripe_types == ["charge.*"]
    (warning,) = [r.getMessage() for r in caplog.records if "trigger.manual" in r.getMessage()]
    assert warning.startswith("flows/f.yaml:4:11: trigger.manual: ignored") and "delete the line" in warning
    assert "ledgerflow run FLOW" in warning


def test_loop_form_must_be_complete(proj):
    mapping = GOOD_MAPPING.replace('Amount: "{{ charge.amount | money(charge.currency) }}"',
                                   'Amount: "1"\nLines:\n  - $for: x in charge.items\n')
    out = problems_of(proj, GOOD_FLOW.replace("action: qbo_bank_row", "action: row"), mapping)
    assert any(p.startswith("mappings/line.yaml:5:5:") and "$for" in p for p in out), out


def test_cli_prints_every_problem_and_exits_1(proj, capsys):
    write(proj, "flows/a.yaml", GOOD_FLOW.replace("target: csv", "target: nope"))
    write(proj, "flows/b.yaml", GOOD_FLOW.replace("name: charges", "name: Bad Name"))
    assert main(["validate", "flows"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert any(l.startswith("flows/a.yaml:6:13: ") for l in out), out
    assert any(l.startswith("flows/b.yaml:1:7: name:") for l in out), out


def test_cli_validate_ok(proj, capsys):
    write(proj, "flows/a.yaml", GOOD_FLOW)
    assert main(["validate"]) == 0


def test_startup_does_not_import_prefect(proj):
    write(proj, "flows/a.yaml", GOOD_FLOW)
    code = ("import sys; from runner.cli import main; "
            "rc = main(['validate', 'flows/a.yaml']); "
            "bad = [m for m in sys.modules if m.startswith(('prefect', 'httpx', 'sqlalchemy'))]; "
            "print(rc, bad); sys.exit(1 if bad or rc else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=proj, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-c", "import sys; from runner.cli import build_parser; build_parser()"
                          ".format_help(); sys.exit('prefect' in sys.modules)"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
