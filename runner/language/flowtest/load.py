"""Test files -> cases, every problem with file, line and column.

Where cases live: ``flows/tests/**/*.yaml`` (a ``cases:`` list, optional
default ``flow:``) and any flow file with a ``tests:`` section. A case with a
problem (a missing flow, an event file that is not JSON, an expected field
the action does not have, ...) is reported as an error and not run.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from runner.core.errors import LedgerflowError, Problem, SpecError
from runner.language.flowtest.model import Case, ExpectedOp, TestFile
from runner.language.mapping import field_name
from runner.language.yamlsrc import Document, load_file

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / "flowtest.schema.json"
_TESTS_KEY = re.compile(r"^tests\s*:", re.M)


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())


def _validator(case_only: bool):
    from jsonschema import Draft202012Validator
    s = schema()
    return Draft202012Validator({"$defs": s["$defs"], "$ref": "#/$defs/case"} if case_only else s)


# ---- which files ----------------------------------------------------------------

def is_test_file(path: Path, root: Path | None = None) -> bool:
    parts = path.relative_to(root).parts[:-1] if root else path.parts[:-1]
    return "tests" in parts


def discover(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, bool]], list[Problem]]:
    """(file, is_inline_flow_file) pairs to load, and problems for paths that do not exist."""
    found: list[tuple[Path, bool]] = []
    problems: list[Problem] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml") and x.is_file()):
                if is_test_file(f, p):
                    found.append((f, False))
                elif _has_tests_section(f):
                    found.append((f, True))
        elif p.is_file():
            found.append((p, not (is_test_file(p) or _has_key(p, "cases"))))
        else:
            problems.append(Problem(str(p), 1, 1, "no such file or folder (expected a test file, a flow file "
                                                  "or a folder of them)"))
    return found, problems


def _has_tests_section(path: Path) -> bool:
    try:
        return bool(_TESTS_KEY.search(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return True   # let the loader report it


def _has_key(path: Path, key: str) -> bool:
    try:
        return re.search(rf"^{key}\s*:", path.read_text(encoding="utf-8"), re.M) is not None
    except (OSError, UnicodeDecodeError):
        return False


# ---- flows by name or path ------------------------------------------------------------

class FlowIndex:
    """Flows of the project, loaded on first use; a broken flow only breaks its own cases."""

    def __init__(self, project: Any):
        self.project = project
        self._names: dict[str, Path] | None = None
        self._loaded: dict[Path, Any] = {}

    def names(self) -> dict[str, Path]:
        if self._names is None:
            from runner.language.spec import iter_flow_files
            self._names = {}
            flow_dir = self.project.dir / "flows"
            for f in iter_flow_files([flow_dir]) if flow_dir.is_dir() else []:
                try:
                    data = load_file(f).data
                except SpecError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("name"), str):
                    self._names.setdefault(data["name"], f)
        return self._names

    def path_for(self, ref: str, base_dir: Path) -> Path | None:
        if ref.endswith((".yaml", ".yml")) or "/" in ref:
            for candidate in (self.project.dir / ref, base_dir / ref):
                if candidate.is_file():
                    return candidate
            return None
        return self.names().get(ref)

    def load(self, path: Path) -> Any:
        """The compiled flow; raises SpecError with the flow's own problems."""
        from runner.language.spec import load_flow
        key = path.resolve()
        if key not in self._loaded:
            try:
                self._loaded[key] = load_flow(path, self.project)
            except SpecError as exc:
                self._loaded[key] = exc
        hit = self._loaded[key]
        if isinstance(hit, SpecError):
            raise hit
        return hit


# ---- files -> cases ---------------------------------------------------------------------

def load_test_file(path: Path, inline: bool, flows: FlowIndex, display: str | None = None) -> TestFile:
    from runner.language.spec import _display
    shown = display or _display(path)
    tf = TestFile(shown, path, inline=inline)
    try:
        doc = load_file(path, shown)
    except SpecError as exc:
        tf.problems = list(exc.problems)
        return tf
    data = doc.data
    if inline:
        items = data.get("tests") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            tf.problems.append(doc.problem(("tests",), "no test cases here (expected a tests: list in the flow "
                                                       "file, or a test file with cases:)"))
            return tf
        key = "tests"
        per_case = {i: _schema_problems(doc, _validator(True), items[i], ("tests", i)) for i in range(len(items))}
        default_flow: Any = path
    else:
        if not isinstance(data, dict):
            tf.problems.append(doc.problem((), "a test file must be a YAML mapping with cases: (see "
                                               "runner/language/schema/flowtest.schema.json)"))
            return tf
        key = "cases"
        per_case = {}
        for prob_path, problem in _schema_errors(doc, _validator(False), data, ()):
            if len(prob_path) >= 2 and prob_path[0] == "cases" and isinstance(prob_path[1], int):
                per_case.setdefault(prob_path[1], []).append(problem)
            else:
                tf.problems.append(problem)
        if tf.problems:
            return tf
        items = data["cases"]
        default_flow = data.get("flow")
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else f"case {i + 1}"
        case = Case(name=name, file=shown, source=path, doc=doc, path=(key, i))
        case.problems.extend(per_case.get(i, []))
        if not case.problems:
            _build(case, item, default_flow, inline, flows)
        tf.cases.append(case)
    return tf


def _schema_problems(doc: Document, validator: Any, instance: Any, prefix: tuple) -> list[Problem]:
    return [p for _, p in _schema_errors(doc, validator, instance, prefix)]


def _schema_errors(doc: Document, validator: Any, instance: Any, prefix: tuple) -> list[tuple[tuple, Problem]]:
    out = []
    for err in validator.iter_errors(instance):
        path = prefix + tuple(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = ", ".join(sorted(err.schema.get("properties", {})))
            for k in [k for k in (err.instance or {}) if k not in err.schema.get("properties", {})]:
                out.append((path + (k,), doc.problem(path + (k,), f"{_where(path)}: unknown key {k!r} "
                                                                  f"(expected one of: {allowed})")))
            continue
        if err.validator == "oneOf" and path[-1:] == ("event",):
            out.append((path, doc.problem(path, _event_message(err, path, prefix))))
            continue
        out.append((path, doc.problem(path, f"{_where(path)}: {err.message}")))
    return out


def _where(path: tuple) -> str:
    return field_name(path) if path else "the file"


def _event_message(err: Any, path: tuple, prefix: tuple) -> str:
    """Say what is wrong for the form the user evidently meant."""
    inst = err.instance
    branch = 0 if isinstance(inst, str) else (1 if isinstance(inst, dict) and "from_fixture" in inst else 2)
    sub = [e for e in err.context if e.schema_path and e.schema_path[0] == branch]
    if isinstance(inst, dict) and sub:
        e = max(sub, key=lambda e: len(e.absolute_path))
        inner = prefix + tuple(e.absolute_path)
        if e.validator == "additionalProperties":
            extra = [k for k in e.instance if k not in e.schema.get("properties", {})]
            return (f"{_where(inner)}: unknown key(s) {', '.join(map(repr, extra))} (expected one of: "
                    f"{', '.join(sorted(e.schema.get('properties', {})))})")
        return f"{_where(inner)}: {e.message}"
    return (f"{_where(path)}: expected a path to a JSON event file, {{from_fixture: TYPE, set: {{...}}}} or an "
            f"inline Stripe event {{id, type, data: {{object: ...}}}}, got {type(inst).__name__}")


def _build(case: Case, item: dict, default_flow: Any, inline: bool, flows: FlowIndex) -> None:
    """Resolve the flow, build the event, read the expectations; problems go on the case."""
    from runner.language.flowtest.compare import plain
    from runner.language.flowtest.inputs import build_event

    base_dir = case.source.parent
    # where to point when the flow is the problem: the case's flow:, the file's flow:, or the case
    if "flow" in item:
        flow_at = case.problem(("flow",), "")
    elif not inline and default_flow is not None:
        flow_at = case.doc.problem(("flow",), "")
    else:
        flow_at = case.problem((), "")
    if inline:
        if "flow" in item:
            case.problems.append(case.problem(("flow",), "flow: a test inside a flow file runs that flow; "
                                                         "remove flow: or move the case to flows/tests/"))
            return
        flow_path: Path | None = case.source
    else:
        ref = item.get("flow", default_flow)
        if ref is None:
            case.problems.append(case.problem((), f"{field_name(case.path)}: no flow (name one with flow: here "
                                                  "or at the top of the file)"))
            return
        flow_path = flows.path_for(ref, base_dir)
        if flow_path is None:
            known = ", ".join(sorted(flows.names())) or "none"
            case.problems.append(Problem(flow_at.file, flow_at.line, flow_at.col,
                                         f"flow: no flow {ref!r} in {flows.project.dir / 'flows'} "
                                         f"(known flows: {known}; or give a flow file path)"))
            return
    try:
        case.flow = flows.load(flow_path)
    except SpecError as exc:
        case.problems.append(Problem(flow_at.file, flow_at.line, flow_at.col,
                                     f"flow: {flow_path} has {len(exc.problems)} problem(s) (ledgerflow validate "
                                     "lists them)"))
        case.problems.extend(exc.problems)
        return

    try:
        case.event = build_event(item["event"], base_dir, flows.project.dir)
    except LedgerflowError as exc:
        case.problems.append(case.problem(("event",), f"event: {exc}"))

    flow = case.flow
    lookup_names = {lk.name for lk in flow.lookups}
    if flow.reads_posting:
        lookup_names.add("balance_transaction")     # the posting's balance transaction, pinned
    for name in (item.get("lookups") or {}):
        if name not in lookup_names:
            case.problems.append(case.problem(("lookups", name), f"lookups.{name}: flow {flow.name} has no look-up "
                                                                 f"{name!r} (its look-ups: "
                                                                 f"{', '.join(sorted(lookup_names)) or 'none'})"))
    case.lookups = dict(item.get("lookups") or {})
    case.params = plain(dict(item.get("params") or {}))
    case.vars = plain(dict(item.get("vars") or {}))

    routes = {r.name: r for r in flow.routes}
    case.error = item.get("error")
    for j, exp in enumerate(item.get("expect") or []):
        at = ("expect", j)
        route = routes.get(exp["route"])
        if route is None:
            case.problems.append(case.problem(at + ("route",), f"expect[{j}].route: flow {flow.name} has no route "
                                                               f"{exp['route']!r} (its routes: "
                                                               f"{', '.join(routes)})"))
            continue
        payload = plain(exp.get("payload")) if "payload" in exp else None
        if payload is not None:
            case.problems.extend(_unknown_fields(case, at, payload, route, flows.project))
        case.expect.append(ExpectedOp(exp["route"], case.path + at, exp.get("match", "subset"), payload,
                                      exp.get("idempotency_key")))


def _unknown_fields(case: Case, at: tuple, payload: dict, route: Any, project: Any) -> list[Problem]:
    """Expected fields the route's action schema does not have."""
    from connectors import registry

    ctype = project.connection_type(route.target)
    action = registry.actions_for(ctype)[route.action]
    root = action.schema
    problems: list[Problem] = []

    from runner.language.schemacheck import resolve_ref

    def resolve(s: Mapping[str, Any]) -> Mapping[str, Any]:
        return resolve_ref(s, root)

    def walk(value: Any, s: Mapping[str, Any], path: tuple) -> None:
        s = resolve(s)
        if isinstance(value, dict):
            props = s.get("properties", {})
            extra = s.get("additionalProperties", True)
            for k, v in value.items():
                if k in props:
                    walk(v, props[k], path + (k,))
                elif extra is False:
                    full = at + ("payload",) + path + (k,)
                    problems.append(case.problem(full, f"{field_name(full)}: action {ctype}.{route.action} "
                                                       f"(route {route.name}) has no field {k!r} (expected one "
                                                       f"of: {', '.join(sorted(props)) or 'none'})"))
                elif isinstance(extra, Mapping):
                    walk(v, extra, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, s.get("items", {}), path + (i,))

    walk(payload, root, ())
    return problems


def load_all(paths: Iterable[str | Path], flows: FlowIndex) -> tuple[list[TestFile], list[Problem]]:
    found, problems = discover(paths)
    return [load_test_file(f, inline, flows) for f, inline in found], problems
