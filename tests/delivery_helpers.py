"""A small project that delivers charges to an HTTP target, for the delivery, worker, DLQ and alert tests."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers_project import charge_event, write

FLOW = """\
name: charges-to-ledger
trigger:
  stripe: [charge.succeeded]
routes:
  - name: doc
    target: ledger_api
    action: post
    mapping: mappings/http/charge_doc.yaml
retry: {attempts: 3, backoff: exponential, first_delay: 10s, max_delay: 40s}
alert: {slack: "#finance-ops", window: 10m}
"""

MAPPING = """\
charge: "{{ charge.id }}"
amount: "{{ charge.amount | money(charge.currency) }}"
currency: "{{ charge.currency | upper }}"
"""


# what a mapping sends when it passes customer details on (the target may echo them back)
PII_MAPPING = MAPPING + 'customer_name: "Jane Doe"\nemail: "jane.doe@example.com"\n'


def http_project(root: Path, target_url: str, *, slack: str = "", extra_connection: str = "",
                 mapping: str = MAPPING) -> Path:
    write(root, "ledgerflow.yaml", f"""\
settings:
  home_currency: USD
  timezone: UTC
  state_dir: .state
connections:
  ledger_api:
    type: http
    url: {target_url}/docs
    timeout: 0.5
    concurrency: 4
{extra_connection}{slack}""")
    write(root, "flows/charges-to-ledger.yaml", FLOW)
    write(root, "mappings/http/charge_doc.yaml", mapping)
    return root / "ledgerflow.yaml"


def load_app(project_file: Path):
    from runner.app import App
    from runner.language.spec import load_project
    return App(load_project(project_file))


def charge(n: int, **kw) -> tuple[dict, str]:
    ev = charge_event(event_id=f"evt_{n:06d}", amount=1000 + n, **kw)
    ev["data"]["object"]["id"] = f"ch_{n:06d}"
    return ev, json.dumps(ev)


def plan_charges(app, count: int, start: int = 0) -> list[int]:
    """Put ``count`` charge events in the inbox and their operations in the store; the delivery ids."""
    flow = app.flow("charges-to-ledger")
    ids = []
    for n in range(start, start + count):
        ev, raw = charge(n)
        app.store.add_event(ev, raw, "test")
        ids += [did for did, _ in app.store.add_deliveries(app.plan_event(ev, flow))]
        app.store.mark_event(ev["id"], "dispatched", flows=flow.name)
    return ids


# a second flow on the same events whose mapping fails at plan time (charge.metadata has no order_id):
# its work waits in a plan row, dead-lettered with the mapping's file:line:col
BROKEN_FLOW = """\
name: broken-flow
trigger:
  stripe: [charge.succeeded]
routes:
  - name: line
    target: ledger_api
    action: post
    mapping: mappings/http/broken.yaml
"""


def add_broken_flow(root: Path) -> None:
    write(root, "flows/broken-flow.yaml", BROKEN_FLOW)
    write(root, "mappings/http/broken.yaml", 'order: "{{ charge.metadata.order_id.upper() }}"\n')
