"""Text output: a line per case, and for a failure a readable expected/actual diff
naming the mapping file and line that produced each differing field."""

from __future__ import annotations

from typing import Any, Iterable

from runner.core import jsonio
from runner.language.flowtest.compare import MISSING
from runner.language.flowtest.model import Result
from runner.language.mapping import field_name


def show(value: Any) -> str:
    if value is MISSING:
        return "(missing)"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{jsonio.dumps(str(k))}: {show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    try:
        return jsonio.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def case_lines(result: Result) -> list[str]:
    case = result.case
    label = {"pass": "PASS ", "fail": "FAIL ", "error": "ERROR"}[result.status]
    flow = f" [{case.flow.name}]" if case.flow is not None else ""
    lines = [f"{label} {case.where}: {case.name}{flow}"]
    for err in result.errors:
        lines.extend("      " + line for line in err.splitlines())
    for f in result.failures:
        head = f"route {f.route}" if f.route else "plan"
        lines.append(f"      {head}{f' ({f.target})' if f.target else ''}: {f.message}")
        for d in f.diffs:
            if not d.path:     # a whole operation
                lines.append(f"        + {show(d.actual)}")
                continue
            src = f"  <- {d.source[0]}:{d.source[1]}:{d.source[2]}" if d.source else ""
            lines.append(f"        {field_name(d.path)}{src}")
            lines.append(f"          - expected {show(d.expected)}")
            lines.append(f"          + actual   {show(d.actual)}")
    return lines


def summary(results: Iterable[Result], file_problems: int) -> str:
    results = list(results)
    n = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error")}
    errors = n["error"] + file_problems
    # the closing line CI systems read: 'N passed, N failed' (a case that could not run counts as failed)
    line = f"flows: {n['pass']} passed, {n['fail'] + errors} failed"
    return (f"{errors} case(s) or file(s) could not run\n" if errors else "") + line
