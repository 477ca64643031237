"""``validate`` knows Stripe's objects: a template reading ``charge.amout`` is an error
with "did you mean `amount`?", found before any event arrives.

The fields come from the stripe SDK's typed resource classes, written out by
scripts/stripe_objects.py into runner/language/_stripe_objects.py (the SDK itself is not
imported). What a name is:

* ``charge``, ``payout``, ``refund``, ... (the event's object under its own name) is
  always that object;
* ``object``, ``data`` and ``event.data.object`` are what the flow's trigger events
  carry (the union for several; not checked when the SDK does not say, as for
  ``customer.source.*``, or for a flow without Stripe events);
* ``event`` is an Event; ``posting`` and ``doc`` the accounting model's Posting and
  DocumentView (their attributes, one level).

Misses are preferred to false alarms: metadata and other free-form fields take any
key, a string field any string method, an id-or-object (expandable) field the
object's fields or a string's, a chain under ``is defined`` or ``| default`` is not
checked, nor are loop variables, look-ups, or anything after an index we cannot
type; ``charge.get('field')`` reads a field the SDK does not know.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import fields as dataclass_fields
from functools import lru_cache
from typing import Iterable

from runner.core.errors import Problem

FREE, SCALAR = "*", "_"
DICT_ATTRS = frozenset(n for n in dir(dict) if not n.startswith("_"))   # a Stripe object is a dict
STR_ATTRS = frozenset(n for n in dir(str) if not n.startswith("_"))


@lru_cache(maxsize=None)
def _generated():
    from runner.language import _stripe_objects
    return _stripe_objects


@lru_cache(maxsize=None)
def _by_template_name() -> dict[str, str]:
    """``checkout_session`` (the name templates read) -> ``checkout.session`` (the type key)."""
    return {key.replace(".", "_"): key for key in _generated().TYPES if "/" not in key}


@lru_cache(maxsize=4096)
def _shape(key: str) -> tuple[str, dict[str, str]]:
    """(display name, {field: code}) of a type key; codes are described in scripts/stripe_objects.py."""
    if key.startswith("@"):
        return _overlay()[key]
    display, *items = _generated().TYPES[key].split(" ")
    out = {}
    for item in items:
        name, _, code = item.partition(":")
        out[name] = code or SCALAR
    return f"Stripe's {display}", out


def _model_shape(display: str, *classes: type, extra: Iterable[str] = ()) -> tuple[str, dict[str, str]]:
    names = set(extra)
    for cls in classes:
        names |= {n for n in dir(cls) if not n.startswith("_")}
        names |= {f.name for f in dataclass_fields(cls)}
    return display, {n: SCALAR for n in names}


@lru_cache(maxsize=None)
def _overlay() -> dict[str, tuple[str, dict[str, str]]]:
    """Shapes that are not Stripe objects: the accounting model's, and the event whose
    data.object is the flow's (``@event.data``, given per flow)."""
    from runner.language.posting.model import DocumentView, Posting
    return {"@posting": _model_shape("the posting (runner/language/posting/model.py Posting)", Posting,
                                     extra=("record", "resolve")),   # LazyPosting's own
            "@doc": _model_shape("the document (runner/language/posting/model.py DocumentView)", DocumentView),
            "@event": ("Stripe's Event", {**_shape("event")[1], "data": "@event.data"})}


def event_objects(stripe_types: Iterable[str]) -> str | None:
    """The code of ``data.object`` for these trigger patterns: one type key or "a|b";
    None when any event type they match carries an object the SDK does not name."""
    return _event_objects(tuple(stripe_types))


@lru_cache(maxsize=256)
def _event_objects(stripe_types: tuple[str, ...]) -> str | None:
    events = _generated().EVENTS
    keys: set[str] = set()
    for pattern in stripe_types:
        if not set(pattern) & set("*?["):
            matched = [pattern] if pattern in events else []
        else:
            matched = [t for t in events if fnmatch.fnmatchcase(t, pattern)]
        if not matched or any(not events[t] for t in matched):
            return None
        keys.update(events[t] for t in matched)
    return "|".join(sorted(keys)) or None


class FieldCheck:
    """The typed names of one flow (or of a mapping checked on its own)."""

    def __init__(self, obj: str | None = None, shadowed: frozenset = frozenset()):
        self.obj = obj                   # the code of data.object (event_objects), None when not known
        self.shadowed = shadowed         # look-up names: not the Stripe objects they spell
        if obj:
            self._event_data = ("Stripe's Event.Data", {**_shape("event/Data")[1], "object": obj})

    def root(self, name: str) -> str | None:
        if name in self.shadowed or name == "account":   # `account` is the connected account's id
            return None
        if name in ("object", "data"):
            return self.obj
        if name in ("posting", "doc"):
            return "@" + name
        if name == "event":
            return "@event" if self.obj else "event"
        return _by_template_name().get(name)

    def chain_problem(self, root: str, parts: tuple) -> tuple[int, str] | None:
        """(index of the bad part, message) for the first part no type along the chain has."""
        code = self.root(root)
        for i, part in enumerate(parts):
            if code is None:
                return None
            code, message = self._step(code, part, root, parts[:i])
            if message:
                return i, message
        return None

    def _shape_of(self, key: str) -> tuple[str, dict[str, str]]:
        if key == "@event.data" and self.obj:
            return self._event_data
        return _shape(key)

    def _step(self, code: str, part, root: str, before: tuple) -> tuple[str | None, str | None]:
        """The code after reading ``part`` (None: unknown from here on), or a problem."""
        alternatives = _split(code)
        if FREE in alternatives or (part or "").startswith("_"):   # `_x`: the sandbox's to refuse
            return None, None
        after, shapes, unknown = [], [], False
        for alt in alternatives:
            if alt == SCALAR:                # an id that could be expanded: a string's methods
                unknown |= part is None or part in STR_ATTRS
            elif alt.startswith("[") and part is None:     # a list: an index gives an element
                after.append(alt[1:-1])
            elif alt.startswith("{") and part == "data":   # a Stripe list object: data is the list
                after.append(f"[{alt[1:-1]}]")
            elif alt.startswith(("[", "{")):
                unknown = True
            elif part is None:
                unknown = True
            else:
                shape = self._shape_of(alt)
                shapes.append(shape)
                if part in shape[1]:
                    after.append(shape[1][part])
                unknown |= part not in shape[1] and part in DICT_ATTRS   # dict.get(...), .items()
        if unknown or not (after or shapes):
            return None, None
        if after:
            return "|".join(sorted(set(after))), None
        known = sorted({f for _, fields in shapes for f in fields})
        written = root + "".join("[...]" if p is None else f".{p}" for p in (*before, part))
        what = " or ".join(display for display, _ in shapes)
        guess = difflib.get_close_matches(part, known, n=1)
        hint = f"; did you mean `{guess[0]}`?" if guess else f" (it has: {', '.join(known)})"
        return None, f"`{written}`: {what} has no field `{part}`{hint}"


def _split(code: str) -> list[str]:
    """"_|charge" -> ["_", "charge"]; brackets keep their inside whole."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(code):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "|" and depth == 0:
            out.append(code[start:i])
            start = i + 1
    out.append(code[start:])
    return out


def flow_problems(doc, data: dict, routes: list) -> list[Problem]:
    """Every read of a field Stripe's objects do not have, in a loaded flow's templates
    (filter, look-up parameters, when, idempotency keys) and its routes' mappings."""
    from runner.language.mapping import field_name

    trigger = data.get("trigger") or {}
    check = FieldCheck(event_objects(trigger.get("stripe") or []), frozenset(data.get("lookups") or {}))
    # the project's environment, whose static checks of these templates are cached already
    env = next((r.mapping.env for r in routes if r.mapping is not None), None)
    out: list[Problem] = []
    flow_level = [(("filter",), True)]
    flow_level += [(("lookups", name, kind, k), False) for name, spec in (data.get("lookups") or {}).items()
                   for kind, params in spec.items() for k in params if k != "provider"]
    for i, _route in enumerate(data.get("routes") or []):
        flow_level += [(("routes", i, "when"), True), (("routes", i, "idempotency_key"), False)]
    for path, expression in flow_level:
        source = _at(data, path)
        if isinstance(source, str):
            out += template_problems(check, doc, path, source, expression, prefix=f"{field_name(path)}: ", env=env)
    seen = set()
    for route in routes:
        mapping = route.mapping
        if mapping is None or id(mapping) in seen:
            continue
        seen.add(id(mapping))
        out += mapping_problems(mapping, check)
    return out


def mapping_problems(mapping, check: FieldCheck | None = None) -> list[Problem]:
    """A mapping's templates, for a flow's check; on its own (a mapping file validated alone)
    ``charge``, ``payout``, ... are known by name, ``object`` and ``data`` not."""
    check = check or FieldCheck()
    return list(_mapping_problems(mapping, check.obj, frozenset(check.shadowed)))


@lru_cache(maxsize=256)
def _mapping_problems(mapping, obj: str | None, shadowed: frozenset) -> tuple[Problem, ...]:
    """Once per mapping and flow shape: many flows share a mapping."""
    from runner.language.mapping import field_name

    check = FieldCheck(obj, shadowed)
    return tuple(p for source, path, expression, scope in mapping.templates
                 for p in template_problems(check, mapping.doc, path, source, expression, scope,
                                            prefix=f"{field_name(path)}: ", env=mapping.env))


def _at(data, path: tuple):
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def template_problems(check: FieldCheck, doc, path: tuple, source: str, expression: bool,
                      scope: Iterable[str] = (), prefix: str = "", env=None) -> list[Problem]:
    """Problems of one template at ``path`` of ``doc``, each pointing at the bad field's name."""
    from jinja2 import TemplateSyntaxError

    from runner.language.templating import attribute_chains, environment

    try:
        chains = attribute_chains(env or environment(), source, expression=expression)
    except TemplateSyntaxError:       # reported where it was compiled
        return []
    out = []
    skip = set(scope)
    for root, parts in chains:
        if root in skip:
            continue
        found = check.chain_problem(root, parts)
        if found:
            index, message = found
            line, col = locate(doc, path, root, parts[:index + 1])
            out.append(Problem(doc.file, line, col, f"{prefix}{message}"))
    return out


def locate(doc, path: tuple, root: str, parts: tuple) -> tuple[int, int]:
    """The line and column of the chain's last name in the file (the first match at or
    after the template's own position); the template's position when not found."""
    line, col = doc.where(path)
    text = _text(doc.file)
    if not text or parts[-1] is None:
        return line, col
    start = _offset(text, line, col)
    pattern = r"\b" + re.escape(root) + "".join(
        r"\s*(?:\[[^\]]*\])" if p is None else r"\s*(?:\.\s*|\[\s*[\"']?)" + re.escape(p) for p in parts[:-1])
    pattern += r"\s*(?:\.\s*|\[\s*[\"']?)(" + re.escape(parts[-1]) + r")\b"
    m = re.compile(pattern).search(text, start)
    if not m:
        return line, col
    at = m.start(1)
    found_line = text.count("\n", 0, at) + 1
    return found_line, at - (text.rfind("\n", 0, at) + 1) + 1


def _offset(text: str, line: int, col: int) -> int:
    pos = 0
    for _ in range(line - 1):
        nl = text.find("\n", pos)
        if nl < 0:
            return len(text)
        pos = nl + 1
    return pos + col - 1


def _text(file: str) -> str:
    try:
        with open(file, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""
