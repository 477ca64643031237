"""Run one case through the same pure planner as ``preview``; nothing is sent."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from runner.core.errors import LedgerflowError
from runner.language.flowtest.compare import MISSING, compare, same_value
from runner.language.flowtest.model import Case, FieldDiff, OpFailure, Result


def run_case(app: Any, case: Case) -> Result:
    if case.problems:
        return Result(case, "error", errors=[str(p) for p in case.problems])
    from runner.language.flowtest.inputs import pinned_lookups
    from runner.language.planner import mapping_location

    started = time.perf_counter()
    flow = replace(case.flow, vars={**case.flow.vars, **case.vars}) if case.vars else case.flow
    try:
        pinned = pinned_lookups(case.lookups, case.event, flow, app.context(params=case.params))
        ops = app.plan_event(case.event, flow, pinned_lookups=pinned, params=case.params)
    except LedgerflowError as exc:
        if case.error is not None:
            ok = case.error in str(exc)
            return Result(case, "pass" if ok else "fail", seconds=time.perf_counter() - started,
                          failures=[] if ok else [OpFailure("", f"planning failed, but not with {case.error!r}: {exc}")])
        return Result(case, "error", errors=[f"planning failed: {exc}"], seconds=time.perf_counter() - started)
    if case.error is not None:
        return Result(case, "fail", operations=ops, seconds=time.perf_counter() - started,
                      failures=[OpFailure("", f"expected planning to fail with {case.error!r}, but it produced "
                                              f"{len(ops)} operation(s): {[op.route for op in ops]}")])

    routes = {r.name: r for r in case.flow.routes}
    failures: list[OpFailure] = []
    unused = list(range(len(ops)))
    for exp in case.expect:
        k = next((k for k in unused if ops[k].route == exp.route), None)
        if k is None:
            failures.append(OpFailure(exp.route, "expected to fire, but did not"))
            continue
        unused.remove(k)
        op = ops[k]
        target = f"{op.connector_type}.{op.action}"
        if exp.idempotency_key is not None and not same_value(exp.idempotency_key, op.idempotency_key):
            failures.append(OpFailure(exp.route, f"idempotency key: expected {exp.idempotency_key!r}, "
                                                 f"got {op.idempotency_key!r}", target))
        if exp.payload is not None:
            diffs = [FieldDiff(path, e, a, mapping_location(routes[op.route], path))
                     for path, e, a in compare(exp.payload, op.payload, exp.exact)]
            if diffs:
                failures.append(OpFailure(exp.route, f"payload differs ({exp.match} match)", target, diffs))
    for k in unused:
        op = ops[k]
        failures.append(OpFailure(op.route, "fired, but is not expected", f"{op.connector_type}.{op.action}",
                                  [FieldDiff((), MISSING, op.payload)]))
    return Result(case, "fail" if failures else "pass", failures=failures, operations=ops,
                  seconds=time.perf_counter() - started)
