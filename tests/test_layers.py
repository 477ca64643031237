"""The runner's layers (pyproject.toml [tool.importlinter], checked by `lint-imports` in the test
command) cover every module: a new module outside every layer would escape the check."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_ENTRYPOINTS = {"runner.scheduled", "runner.prefect_flows"}   # shims for registered deployments


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in layers for name in layer.replace("|", ":").split(":")]


def _modules() -> list[str]:
    out = []
    for path in (ROOT / "runner").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append(".".join(parts))
    return sorted(out)


def test_every_runner_module_is_in_a_layer():
    layers = _layers()
    outside = [m for m in _modules() if m != "runner" and m not in OLD_ENTRYPOINTS
               and not any(m == layer or m.startswith(layer + ".") for layer in layers)]
    assert outside == [], f"modules in no layer of pyproject.toml's [tool.importlinter] contract: {outside}"


def test_the_stages_are_folders_in_data_order():
    layers = _layers()
    for stage in ("cli", "operate", "deliver", "ingest", "reconcile", "language", "store", "core"):
        assert (ROOT / "runner" / stage / "__init__.py").is_file() and f"runner.{stage}" in layers
    order = [name for name in layers if name.count(".") == 1]
    assert order.index("runner.ingest") > order.index("runner.deliver") > order.index("runner.operate")


def test_an_entrypoint_registered_before_the_regrouping_still_loads():
    """Deployments registered with ``runner/scheduled.py:scheduled_run`` keep working."""
    from prefect.flows import load_flow_from_entrypoint
    flow = load_flow_from_entrypoint(str(ROOT / "runner" / "scheduled.py") + ":scheduled_run")
    assert flow.name == "ledgerflow-scheduled"
