"""The published JSON Schemas: valid, and their pre-compiled validators fresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from runner.language import schemacheck

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = sorted((ROOT / "runner" / "language" / "schema").glob("*.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path):
    Draft202012Validator.check_schema(json.loads(path.read_text()))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_generated_validator_is_fresh(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("compile_schemas", ROOT / "scripts" / "compile_schemas.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    generated = ROOT / "runner" / "language" / "_schema_validators" / f"{mod.module_name(path.name)}.py"
    assert generated.exists() and generated.read_text() == mod.generate(path.name), (
        f"{generated.relative_to(ROOT)} is stale: run .venv/bin/python scripts/compile_schemas.py")


def test_fast_and_explaining_paths_agree():
    schema = json.loads((ROOT / "runner" / "language" / "schema" / "flow.schema.json").read_text())
    good = {"name": "x", "trigger": {"stripe": ["charge.succeeded"]}, "routes": [{"name": "r", "target": "t", "action": "a",
                                                                   "mapping": "m.yaml"}]}
    assert schemacheck.errors(schema, good) == []
    bad = dict(good, retry={"attempts": 0})
    errs = schemacheck.errors(schema, bad)
    assert [list(e.absolute_path) for e in errs] == [["retry", "attempts"]]
    assert schemacheck._generated(schema) is not None


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_generated_validator_is_used(path):
    """The digest matches the schema as read, so validate never compiles one at start-up."""
    assert schemacheck._generated(json.loads(path.read_text())) is not None, (
        f"the pre-compiled validator for {path.name} is not used (digest mismatch)")
