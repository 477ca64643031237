"""Mappings: the target document with Jinja templates at its string leaves.

Forms:
* ``Field: "{{ charge.id }}"``      a template (native type when it is one expression)
* ``Field?: "{{ charge.description }}"``  left out when the value is empty
  (None, "", [] or {})
* a list item ``{$for: "item in invoice.lines.data", $each: {...}, $if: "{{ item.amount }}"}``
  repeats ``$each`` once per element (``$if`` optional), so one line per
  invoice item.

Mappings compile once per flow; ``render`` runs per event and reports the
mapping file, line, column and field of any failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from runner.core.errors import Problem, RenderError, SpecError
from runner.language.templating import Compiled, Environment, Scope, TemplateProblem, is_template
from runner.language.yamlsrc import Document

_EMPTY = (None, "", [], {})


@lru_cache(maxsize=4)
def _schema(name: str) -> dict:
    return json.loads((Path(__file__).parent / "schema" / name).read_text())


@dataclass
class Leaf:
    compiled: Compiled
    file: str
    pos: tuple[int, int]
    path: tuple

    def render(self, ctx: dict) -> Any:
        try:
            return self.compiled(ctx)
        except TemplateProblem as exc:
            raise RenderError(str(exc), Problem(self.file, self.pos[0], self.pos[1],
                                                f"{field_name(self.path)}: {exc}")) from None


@dataclass
class Literal:
    value: Any

    def render(self, ctx: dict) -> Any:
        return self.value


@dataclass
class Obj:
    fields: list[tuple[str, bool, Any]]  # (key, omit_if_empty, node)

    def render(self, ctx: dict) -> dict:
        out = {}
        for key, optional, node in self.fields:
            value = node.render(ctx)
            if optional and (value is None or value == "" or value == [] or value == {}):
                continue
            out[key] = value
        return out


@dataclass
class Loop:
    var: str
    iterable: Leaf
    condition: Leaf | None
    each: Any

    def expand(self, ctx: dict) -> list:
        seq = self.iterable.render(ctx)
        if seq is None:
            return []
        if isinstance(seq, (str, bytes, Mapping)) or not hasattr(seq, "__iter__"):
            raise RenderError("", Problem(self.iterable.file, *self.iterable.pos,
                                          f"{field_name(self.iterable.path)}: $for needs a list, "
                                          f"got {type(seq).__name__}"))
        out = []
        for element in seq:
            inner = ctx.child(self.var, element)
            if self.condition is not None and not self.condition.render(inner):
                continue
            out.append(self.each.render(inner))
        return out


class Rendered(list):
    """A rendered list that remembers which mapping item produced each element,
    so an error in element 3 can point at the loop (or literal item) behind it."""

    __slots__ = ("origins",)

    def __init__(self, values=(), origins=()):
        super().__init__(values)
        self.origins = list(origins)


@dataclass
class Seq:
    items: list[Any]

    def render(self, ctx: dict) -> list:
        out = Rendered()
        for i, item in enumerate(self.items):
            if isinstance(item, Loop):
                produced = item.expand(ctx)
                out.extend(produced)
                out.origins.extend([i] * len(produced))
            else:
                out.append(item.render(ctx))
                out.origins.append(i)
        return out


def field_name(path: tuple) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p).rstrip("?")
    return out or "(document)"


class Mapping_:
    """A compiled mapping: ``render(ctx) -> payload``."""

    def __init__(self, doc: Document, root: Obj, names: set[str], env: Environment,
                 templates: list[tuple[str, tuple, bool, frozenset]] | None = None):
        self.env = env
        self.file = doc.file
        self.doc = doc
        self.root = root
        self.names = names   # top-level names the templates read
        self.templates = templates or []   # (source, path, expression, loop names): for validate's field check

    def render(self, ctx: "dict | Scope") -> dict:
        if not isinstance(ctx, Scope):
            ctx = Scope(self.env, ctx)
        return self.root.render(ctx)


def compile_mapping(doc: Document, env: Environment) -> Mapping_:
    """Check a mapping document against the mapping schema and compile its templates."""
    from runner.language.schemacheck import errors

    problems: list[Problem] = []
    if not isinstance(doc.data, dict):
        raise SpecError([doc.problem((), "a mapping must be a YAML mapping of target fields")])
    problems.extend(_loop_problems(doc, doc.data, ()))
    if problems:
        raise SpecError(problems)
    for err in errors(_schema("mapping.schema.json"), doc.data):
        problems.append(doc.problem(tuple(err.absolute_path), _loop_hint(err)))
    if problems:
        raise SpecError(problems)

    names: set[str] = set()
    unsafe: list[Problem] = []
    templates: list[tuple[str, tuple, bool, frozenset]] = []

    def compile_leaf(source: str, path: tuple, expression: bool = False, scope: frozenset = frozenset()) -> Leaf:
        from runner.language.templating import referenced_names, unsafe_attributes
        try:
            compiled = Compiled(env, source, expression=expression)
            for attr in unsafe_attributes(env, source, expression=expression):
                unsafe.append(doc.problem(path, f"{field_name(path)}: attribute {attr!r} is not "
                                                "allowed (templates run in a sandbox)"))
            names.update(referenced_names(env, source, expression=expression) - scope)
            templates.append((source, path, expression, scope))
        except TemplateProblem as exc:
            problems.append(doc.problem(path, f"{field_name(path)}: {exc}"))
            compiled = None  # type: ignore[assignment]
        return Leaf(compiled, doc.file, doc.where(path), path)

    def build(value: Any, path: tuple, scope: frozenset = frozenset()) -> Any:
        if isinstance(value, dict):
            if "$for" in value:
                var, _, expr = value["$for"].strip().partition(" in ")
                it = compile_leaf(expr.strip(), path + ("$for",), expression=True, scope=scope)
                inner = scope | {var.strip()}
                cond = (compile_leaf(value["$if"], path + ("$if",), expression=True, scope=inner)
                        if "$if" in value else None)
                each = build(value["$each"], path + ("$each",), inner)
                return Loop(var.strip(), it, cond, each)
            return Obj([(str(k).rstrip("?"), str(k).endswith("?"), build(v, path + (k,), scope))
                        for k, v in value.items()])
        if isinstance(value, list):
            return Seq([build(v, path + (i,), scope) for i, v in enumerate(value)])
        if isinstance(value, float):
            problems.append(doc.problem(path, f"{field_name(path)}: write numbers as quoted strings "
                                              f"(\"{value}\") so they stay exact Decimals"))
            return Literal(None)
        if is_template(value):
            return compile_leaf(value, path, scope=scope)
        return Literal(value)

    root = build(doc.data, ())
    problems.extend(unsafe)
    if problems:
        raise SpecError(problems)
    return Mapping_(doc, root, names, env, templates)


_LOOP_KEYS = {"$for", "$each", "$if"}


def _loop_problems(doc: Document, value: Any, path: tuple) -> list[Problem]:
    """Loop items checked first, so their errors say what a loop needs."""
    out: list[Problem] = []
    if isinstance(value, dict):
        keys = set(value)
        if keys & _LOOP_KEYS:
            where = field_name(path)
            if "$for" not in keys or "$each" not in keys or keys - _LOOP_KEYS:
                extra = sorted(keys - _LOOP_KEYS)
                out.append(doc.problem(path, f"{where}: a loop needs $for: \"x in list\" and $each (optional $if)"
                                             + (f"; unexpected {', '.join(map(repr, extra))}" if extra else "")))
            elif not isinstance(value["$for"], str) or " in " not in value["$for"] or \
                    not value["$for"].split(" in ")[0].strip().isidentifier():
                out.append(doc.problem(path + ("$for",), f"{where}.$for: expected \"NAME in EXPRESSION\", "
                                                         f"got {value['$for']!r}"))
        for k, v in value.items():
            out.extend(_loop_problems(doc, v, path + (k,)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_loop_problems(doc, v, path + (i,)))
    return out


def _loop_hint(err) -> str:
    path = tuple(err.absolute_path)
    where = field_name(path)
    if err.validator in ("anyOf", "oneOf", "not") and isinstance(err.instance, dict) and (
            "$for" in err.instance or "$each" in err.instance):
        return f"{where}: a loop needs exactly $for: \"x in list\" and $each (optional $if)"
    return f"{where}: {err.message}"


# ---- static check of a mapping against an action's payload schema ------------

def is_valid_literal(schema: Mapping[str, Any], value: Any) -> bool:
    """A quick answer for the common literal leaves, without compiling a schema."""
    t = schema.get("type")
    if set(schema) <= {"type", "description", "title", "minLength", "maxLength"} and isinstance(value, str) \
            and (t == "string" or (isinstance(t, list) and "string" in t)):
        return schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 30)
    from runner.language.schemacheck import is_valid
    return is_valid(schema, value)

def check_shape(mapping: Mapping_, schema: Mapping[str, Any], action: str) -> list[Problem]:
    """Field names, required fields and literal types, without any event data."""
    doc = mapping.doc
    problems: list[Problem] = []

    from runner.language.schemacheck import resolve_ref

    def resolve(s: Mapping[str, Any]) -> Mapping[str, Any]:
        return resolve_ref(s, schema)

    def walk(value: Any, s: Mapping[str, Any], path: tuple) -> None:
        s = resolve(s)
        if isinstance(value, dict) and "$for" in value:
            walk(value["$each"], s, path + ("$each",))
            return
        if isinstance(value, dict):
            if s.get("type") not in (None, "object") and "object" not in (s.get("type") or []):
                problems.append(doc.problem(path, f"{field_name(path)}: {action} expects "
                                                  f"{s.get('type')} here, the mapping has an object"))
                return
            props = s.get("properties", {})
            keys = {str(k).rstrip("?") for k in value}
            for key in s.get("required", []):
                if key not in keys:
                    problems.append(doc.problem(path, f"{field_name(path + (key,))}: required by "
                                                      f"action {action} but not mapped"))
            for k, v in value.items():
                key = str(k).rstrip("?")
                if key in props:
                    walk(v, props[key], path + (k,))
                elif s.get("additionalProperties", True) is False:
                    expected = ", ".join(sorted(props)) or "none"
                    problems.append(doc.key_problem(path + (k,), f"{field_name(path + (k,))}: action {action} "
                                                             f"has no field {key!r} (expected one of: {expected})"))
                elif isinstance(s.get("additionalProperties"), dict):
                    walk(v, s["additionalProperties"], path + (k,))
            return
        if isinstance(value, list):
            if s.get("type") not in (None, "array"):
                problems.append(doc.problem(path, f"{field_name(path)}: {action} expects "
                                                  f"{s.get('type')} here, the mapping has a list"))
                return
            for i, v in enumerate(value):
                walk(v, s.get("items", {}), path + (i,))
            return
        if is_template(value) or value is None:
            return
        from runner.language.schemacheck import iter_errors
        literal_schema = {k: v for k, v in s.items() if k not in ("properties", "items", "required", "$defs")}
        if is_valid_literal(literal_schema, value):
            return
        for err in iter_errors(literal_schema, value):
            problems.append(doc.problem(path, f"{field_name(path)}: {err.message}"))

    walk(doc.data, schema, ())
    return problems
