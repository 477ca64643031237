"""Imports by need: `validate` and `preview` of a valid flow load none of the heavy
libraries they do not use (jsonschema explains failures only; Prefect, SQLAlchemy and
httpx run flows, the store and connectors). A behaviour test: it reads sys.modules in
a fresh interpreter; the start-up times are measured by bench/bench_cli_start.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .helpers_project import charge_event, make_project, write

HEAVY = ("jsonschema", "prefect", "sqlalchemy", "httpx", "stripe", "fastapi", "uvicorn")
FLOW = """\
name: charges
trigger: {stripe: ["charge.succeeded"]}
filter: "{{ charge.paid }}"
routes:
  - name: row
    target: csv
    action: row
    mapping: mappings/row.yaml
"""
ROW = """\
id: "{{ charge.id }}"
amount: "{{ charge.amount | money(charge.currency) }}"
memo?: "{{ charge.metadata.order_id }}"
"""


def heavy_modules_after(args: list[str], cwd) -> tuple[int, list[str], str]:
    code = ("import sys; from runner.cli import main; rc = main(%r); "
            "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & set(%r))); sys.exit(rc)" % (args, HEAVY))
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=180,
                         env={**__import__("os").environ, "LEDGERFLOW_PROJECT": ""})
    line = [x for x in res.stdout.splitlines() if x.startswith("HEAVY")]
    assert line, res.stdout + res.stderr
    return res.returncode, eval(line[-1][len("HEAVY "):]), res.stdout + res.stderr   # noqa: S307 - our own print


def project(tmp_path):
    make_project(tmp_path)
    write(tmp_path, "flows/charges.yaml", FLOW)
    write(tmp_path, "mappings/row.yaml", ROW)
    (tmp_path / "event.json").write_text(json.dumps(charge_event(metadata={"order_id": "42"})))
    return tmp_path


def test_validate_one_file_imports_nothing_heavy(tmp_path):
    rc, heavy, out = heavy_modules_after(["validate", "flows/charges.yaml"], project(tmp_path))
    assert rc == 0 and heavy == [], out


def test_preview_imports_nothing_heavy(tmp_path):
    rc, heavy, out = heavy_modules_after(["preview", "flows/charges.yaml", "--event", "event.json"],
                                         project(tmp_path))
    assert rc == 0 and '"amount": 10.5' in out and heavy == [], out


def test_a_failing_payload_still_explains_itself(tmp_path):
    """jsonschema, loaded only on failure, still names the field (a row's column cannot be an object)."""
    root = project(tmp_path)
    write(root, "mappings/row.yaml", ROW.replace('"{{ charge.id }}"', '"{{ charge.metadata }}"'))
    rc, heavy, out = heavy_modules_after(["preview", "flows/charges.yaml", "--event", "event.json"], root)
    assert rc == 1 and "mappings/row.yaml:1:5: id:" in out and "jsonschema" in heavy, out


def test_preview_of_an_event_the_flow_does_not_book_opens_no_store(tmp_path):
    """A posting flow's balance-transaction cache (the store) opens on first fetch, not with the app."""
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "ledgerflow.yaml", tmp_path)
    shutil.copytree(root / "mappings", tmp_path / "mappings")
    (tmp_path / "flows").mkdir()
    shutil.copy(root / "flows" / "stripe-movements-to-iif.yaml", tmp_path / "flows")
    event = root / "flows" / "tests" / "events" / "charge-refunded-eur.json"
    rc, heavy, out = heavy_modules_after(["preview", "flows/stripe-movements-to-iif.yaml", "--event", str(event)],
                                         tmp_path)
    assert rc == 0 and "filtered out: no operations" in out and heavy == [], out
    assert not (tmp_path / ".ledgerflow").exists()
