"""`validate` knows Stripe's objects (runner/language/stripe_fields.py): a template reading a field
Stripe's object does not have fails with file:line:col and the nearest field; unknown
filters list the available ones; an unquoted {{ }} says to quote it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from runner.cli import main
from runner.core.errors import SpecError
from runner.language.spec import load_flow, load_project

from .helpers_project import make_project, write

ROOT = Path(__file__).resolve().parent.parent

FLOW = """\
name: charges
trigger: {stripe: [TRIGGER]}
filter: "FILTER"
routes:
  - name: line
    target: csv
    action: row
    mapping: mappings/line.yaml
"""
MAPPING = """\
id: "{{ charge.id }}"
amount: "{{ charge.amount | money(charge.currency) }}"
"""


@pytest.fixture
def proj(tmp_path, monkeypatch):
    make_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGERFLOW_PROJECT", raising=False)
    return tmp_path


def problems(proj: Path, filter_: str = "{{ charge.paid }}", mapping: str = MAPPING,
             trigger: str = "charge.succeeded", flow: str = FLOW) -> list[str]:
    write(proj, "flows/f.yaml", flow.replace("TRIGGER", trigger).replace("FILTER", filter_))
    write(proj, "mappings/line.yaml", mapping)
    try:
        load_flow(proj / "flows/f.yaml", load_project(proj / "ledgerflow.yaml"))
    except SpecError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_misspelt_field_in_a_flow_template_fails_validate_with_the_nearest_name(proj, capsys):
    write(proj, "flows/f.yaml", FLOW.replace("TRIGGER", "charge.succeeded")
          .replace("FILTER", "{{ charge.paid and charge.amout > 0 }}"))
    write(proj, "mappings/line.yaml", MAPPING)
    assert main(["validate"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["flows/f.yaml:3:36: filter: `charge.amout`: Stripe's Charge has no field `amout`; "
                   "did you mean `amount`?"]


def test_misspelt_field_in_a_mapping_points_at_the_mapping_line(proj):
    out = problems(proj, mapping=MAPPING + 'memo: "Charge {{ charge.descripton }}"\n')
    assert out == ["mappings/line.yaml:3:25: memo: `charge.descripton`: Stripe's Charge has no field "
                   "`descripton`; did you mean `description`?"]


def test_nested_fields_are_checked_and_valid_ones_pass(proj):
    good = ('memo: "{{ charge.billing_details.address.city }} {{ charge.refunds.data[0].amount }} '
            '{{ charge.balance_transaction.fee }} {{ charge.customer.startswith(\'cus_\') }} '
            '{{ charge.outcome.risk_level }} {{ charge.get(\'not_in_the_sdk\') }} {{ charge.items() | list }}"\n')
    assert problems(proj, mapping=MAPPING + good) == []
    out = problems(proj, mapping=MAPPING + 'memo: "{{ charge.billing_details.address.citty }}"\n')
    assert len(out) == 1 and out[0].startswith("mappings/line.yaml:3:42: memo: `charge.billing_details.address.citty`: "
                                               "Stripe's Charge.BillingDetails.Address has no field `citty`; "
                                               "did you mean `city`?"), out
    out = problems(proj, mapping=MAPPING + 'memo: "{{ charge.refunds.data[0].amout }}"\n')
    assert out and "`charge.refunds.data[...].amout`: Stripe's Refund has no field `amout`" in out[0], out


def test_metadata_takes_any_key(proj):
    mapping = MAPPING + 'memo: "{{ charge.metadata.order_id }} {{ charge.metadata[\'any key\'].deeper }}"\n'
    assert problems(proj, mapping=mapping) == []


def test_object_and_event_data_object_follow_the_trigger(proj):
    assert problems(proj, "{{ object.amount > 0 and event.data.object.paid }}") == []
    out = problems(proj, "{{ event.data.object.amout }}", trigger="payout.paid")
    assert out == ["flows/f.yaml:3:31: filter: `event.data.object.amout`: Stripe's Payout has no field `amout`; "
                   "did you mean `amount`?"]
    # refund.created carries a Refund, charge.refunded a Charge: either's fields pass, neither's fail
    both = "refund.created, charge.refunded"
    assert problems(proj, "{{ object.reason or object.paid }}", trigger=both) == []
    out = problems(proj, "{{ object.resaon }}", trigger=both)
    assert len(out) == 1 and "Stripe's Charge or Stripe's Refund has no field `resaon`" in out[0], out
    # the SDK does not say what customer.source.* carries (a card, a bank account, a source): not checked
    assert problems(proj, "{{ object.anything }}", trigger="customer.source.created") == []


def test_absence_tests_loop_variables_and_lookups_are_not_checked(proj):
    assert problems(proj, "{{ charge.maybe_new is defined and charge.other | default(1) }}") == []
    journal = ('date: "2026-01-01"\nnumber: "{{ charge.id }}"\nlines:\n'
               '  - $for: charge in charge.refunds.data\n'
               '    $each: {account: "{{ charge.reason }}", amount: "{{ charge.amount }}"}\n')
    assert problems(proj, mapping=journal, flow=FLOW.replace("action: row", "action: journal")) == []
    lookup = FLOW.replace("routes:", "lookups:\n  charge: {fx: {from: EUR, to: USD}}\nroutes:")   # shadows charge
    assert problems(proj, "{{ charge.anything }}", mapping="id: x\n", flow=lookup) == []


def test_posting_and_doc_attributes(proj):
    out = problems(proj, "{{ posting.kidn == 'charge' }}")
    assert out == ["flows/f.yaml:3:21: filter: `posting.kidn`: the posting (runner/language/posting/model.py Posting) "
                   "has no field `kidn`; did you mean `kind`?"]
    assert problems(proj, "{{ posting.kind == 'charge' and posting.amount_of('fee') < 0 and posting.record() }}") == []


def test_shipped_flows_validate(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("LEDGERFLOW_PROJECT", raising=False)
    assert main(["validate"]) == 0


def test_unknown_filter_lists_the_available_ones(proj):
    out = problems(proj, mapping=MAPPING.replace("| money(", "| mony("))
    assert len(out) == 1
    assert out[0].startswith("mappings/line.yaml:2:9: amount: template syntax error: no filter named 'mony' "
                             "(did you mean `money`?); available: "), out
    assert "clip, " in out[0] and "round_money" in out[0] and "upper" in out[0]


@pytest.mark.parametrize("line, where", [
    ("memo: {{ charge.description }}\n", "mappings/line.yaml:3:7"),
    ("memo: {{ charge.id }} paid\n", "mappings/line.yaml:3:7"),
    ("memo: {% if charge.paid %}paid{% endif %}\n", "mappings/line.yaml:3:7"),
    ("tags:\n  - {{ charge.id }}\n", "mappings/line.yaml:4:5"),
])
def test_unquoted_template_says_to_quote_it(proj, line, where):
    out = problems(proj, mapping=MAPPING + line)
    assert len(out) == 1 and out[0].startswith(f"{where}: a template must be quoted"), out
    value = line.split(": ", 1)[-1].split("- ", 1)[-1].strip()
    assert f'write "{value}"' in out[0], out


def test_regenerating_the_stripe_fields_gives_the_committed_file():
    spec = importlib.util.spec_from_file_location("stripe_objects", ROOT / "scripts" / "stripe_objects.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = (ROOT / "runner" / "language" / "_stripe_objects.py").read_text()
    assert committed == mod.generate(), (
        "runner/language/_stripe_objects.py does not match the installed stripe SDK: "
        "run .venv/bin/python scripts/stripe_objects.py")


def test_a_mapping_validated_on_its_own_knows_objects_by_name(proj, capsys):
    write(proj, "mappings/alone.yaml", 'id: "{{ payout.id }}"\nwhen: "{{ payout.arival_date }} {{ object.x }}"\n')
    assert main(["validate", "mappings/alone.yaml"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["mappings/alone.yaml:2:18: when: `payout.arival_date`: Stripe's Payout has no field `arival_date`; "
                   "did you mean `arrival_date`?"]
