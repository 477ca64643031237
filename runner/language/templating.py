"""Jinja in a sandbox: strict about undefined names, explicit about money.

Templates are code people edit, so:
* ``ImmutableSandboxedEnvironment``: no attribute starting with ``_``, no
  mutation of the event, nothing outside the values we hand in;
* ``StrictUndefined``: a typo fails loudly instead of posting ``""``;
* a template that is a single ``{{ expression }}`` keeps its native type
  (a ``Decimal`` stays a ``Decimal``); anything else renders to a string.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal
from functools import lru_cache
from types import BuiltinMethodType, MethodType
from typing import Any, Callable
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined, new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runner.core import money

_METHODS = (MethodType, BuiltinMethodType)
_SINGLE_EXPR_RE = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.S)


class _SingleExpr:
    """Matches a template that is exactly one ``{{ expression }}`` (not ``{{ a }}/{{ b }}``)."""

    @staticmethod
    def match(source: str):
        m = _SINGLE_EXPR_RE.match(source)
        if m and "{{" not in m.group("expr") and "{%" not in m.group("expr"):
            return m
        return None


_SINGLE_EXPR = _SingleExpr()


class TemplateProblem(Exception):
    """A template that does not compile or fails to evaluate; message is user-facing."""


def _to_datetime(value: Any, tz: ZoneInfo) -> datetime:
    if isinstance(value, bool):
        raise TemplateProblem(f"expected a Unix timestamp or ISO date, got {value!r}")
    if isinstance(value, (int, Decimal)):
        return datetime.fromtimestamp(int(value), tz=timezone.utc).astimezone(tz)
    if isinstance(value, datetime):
        return value.astimezone(tz) if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=tz)
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            return _to_datetime(int(s), tz)
        try:
            return _to_datetime(datetime.fromisoformat(s.replace("Z", "+00:00")), tz)
        except ValueError:
            pass
    raise TemplateProblem(f"expected a Unix timestamp or ISO date, got {value!r}")


def make_filters(tz_name: str) -> dict[str, Callable[..., Any]]:
    tz = ZoneInfo(tz_name)

    def money_filter(amount: Any, currency: Any) -> Decimal:
        """Stripe minor units -> Decimal major units (per-currency exponent)."""
        try:
            return money.from_minor(amount, currency)
        except money.MoneyError as exc:
            raise TemplateProblem(f"money: {exc}") from None

    def decimal_filter(value: Any) -> Decimal:
        try:
            return money.to_decimal(value, "decimal")
        except money.MoneyError as exc:
            raise TemplateProblem(str(exc)) from None

    def round_filter(value: Any, currency: Any) -> Decimal:
        try:
            return money.round_money(value, currency)
        except money.MoneyError as exc:
            raise TemplateProblem(f"round_money: {exc}") from None

    def minor_filter(value: Any, currency: Any) -> int:
        try:
            return money.to_minor(value, currency)
        except money.MoneyError as exc:
            raise TemplateProblem(f"minor: {exc}") from None

    def date_filter(value: Any, fmt: str | None = None) -> str:
        dt = _to_datetime(value, tz)
        return dt.strftime(fmt) if fmt else dt.date().isoformat()

    def datetime_filter(value: Any) -> str:
        return _to_datetime(value, tz).isoformat()

    def clip(value: Any, length: int, end: str = "") -> str:
        """Truncate to at most ``length`` characters (``end`` included), never fails on None."""
        s = "" if value is None else str(value)
        if len(s) <= length:
            return s
        return s[: max(0, length - len(end))] + end

    def negate(value: Any) -> Decimal:
        return -money.to_decimal(value)

    def strict(fn: Callable[..., Any]) -> Callable[..., Any]:
        """An undefined value passed to a filter fails as undefined, not as a type error."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for a in (*args, *kwargs.values()):
                if isinstance(a, Undefined):
                    a._fail_with_undefined_error()
            return fn(*args, **kwargs)
        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    return {name: strict(fn) for name, fn in {
        "money": money_filter,
        "decimal": decimal_filter,
        "round_money": round_filter,
        "minor": minor_filter,
        "date": date_filter,
        "datetime": datetime_filter,
        "clip": clip,
        "negate": negate,
    }.items()}


class Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with our filters; one per (timezone).

    Templates read only the values we hand in: Jinja's globals (``range``, ``dict``,
    ``lipsum()``, ``cycler()``, ``joiner()``, ``namespace()``) are removed, as ``validate``
    already refuses those names as undefined."""

    def __init__(self, tz_name: str = "UTC"):
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self.filters.update(make_filters(tz_name))
        self.globals.clear()
        # the sandbox's verdict on (type, attribute): it depends on nothing else (see getattr)
        self._safe: dict[tuple[type, str], bool] = {}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Stripe objects are dicts: `subscription.items` means the field, not dict.items
        if isinstance(obj, dict) and attribute in obj:
            return obj[attribute]
        try:
            value = getattr(obj, attribute)
        except AttributeError:              # an item, or undefined (as Jinja's sandbox)
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        if isinstance(value, _METHODS):
            fmt = self.wrap_str_format(value)           # str.format: sandboxed, as Jinja does
            if fmt is not None:
                return fmt
        key = (type(obj), attribute)
        safe = self._safe.get(key)
        if safe is None:
            # ImmutableSandboxedEnvironment.is_safe_attribute looks only at the attribute's name and
            # the object's type (internal attributes of functions, methods, types, frames,
            # generators; the mutating methods of list, dict, set, deque): one verdict per pair
            safe = self._safe[key] = self.is_safe_attribute(obj, attribute, value)
        return value if safe else self.unsafe_undefined(obj, attribute)


@lru_cache(maxsize=8)
def environment(tz_name: str = "UTC") -> Environment:
    return Environment(tz_name)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class Scope:
    """The values templates read for one event, with one Jinja context shared by
    every template evaluated in it (a Jinja context per template call would
    dominate the cost of planning)."""

    __slots__ = ("env", "values", "_jctx")

    def __init__(self, env: "Environment", values: dict[str, Any]):
        self.env = env
        self.values = values
        self._jctx = None

    def jinja(self):
        if self._jctx is None:
            self._jctx = new_context(self.env, None, {}, vars=self.values, shared=True, globals=self.env.globals)
        return self._jctx

    def child(self, name: str, value: Any) -> "Scope":
        return Scope(self.env, {**self.values, name: value})

    def set(self, name: str, value: Any) -> None:
        self.values[name] = value
        self._jctx = None


_NO_SUCH = re.compile(r"^No (filter|test) named '([^']*)'")


def _explained(env: Environment, message: str) -> str:
    """Jinja's "No filter named 'dat'." with the nearest name and every available one."""
    m = _NO_SUCH.match(message)
    if not m:
        return message
    import difflib
    kind, name = m.groups()
    known = sorted(n for n in (env.filters if kind == "filter" else env.tests) if n.isidentifier())
    guess = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean `{guess[0]}`?)" if guess else ""
    return f"no {kind} named {name!r}{hint}; available: {', '.join(known)}"


_SLOW = object()        # a chain that met something Jinja must explain (an undefined name or field)


def _chain(env: Environment, expr: str) -> tuple[str, tuple[tuple[bool, Any], ...]] | None:
    """``(name, steps)`` when an expression only reads a name's fields (``line.account``,
    ``posting.lines``, ``event['data'][0]``): each step (is an attribute, key). None otherwise."""
    from jinja2.parser import Parser
    try:
        parser = Parser(env, expr, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            return None
    except TemplateSyntaxError:
        return None
    steps: list[tuple[bool, Any]] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            steps.append((True, node.attr))
        elif isinstance(node.arg, nodes.Const) and type(node.arg.value) in (str, int):
            steps.append((False, node.arg.value))
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    return node.name, tuple(reversed(steps))


def _walk(env: Environment, chain: tuple[str, tuple], scope: "Scope") -> Any:
    """A chain's value read as Jinja's compiled code reads it (the name as Context.resolve_or_missing
    finds it, each field through the sandbox's getattr/getitem), without a Jinja frame; ``_SLOW``
    when Jinja must run it (an undefined on the way: Jinja says what is undefined)."""
    name, steps = chain
    jctx = scope._jctx
    if jctx is not None and name in jctx.vars:          # a text template's {% set %}
        obj = jctx.vars[name]
    else:
        obj = scope.values.get(name, _SLOW)
    for is_attr, key in steps:
        if obj is _SLOW or isinstance(obj, Undefined):
            return _SLOW
        obj = env.getattr(obj, key) if is_attr else env.getitem(obj, key)
    return _SLOW if isinstance(obj, Undefined) else obj


class Compiled:
    """A compiled string leaf: either a native expression or a text template. A native expression
    that only reads fields (``{{ posting.date }}``, the most common kind) is read directly."""

    __slots__ = ("source", "_render", "native", "env", "_chain")

    def __init__(self, env: Environment, source: str, *, expression: bool = False):
        self.source = source
        self.env = env
        self._chain = None
        m = _SINGLE_EXPR.match(source)
        try:
            if expression and not m:
                if "{{" in source or "{%" in source:
                    raise TemplateProblem("a condition must be one expression, like \"{{ charge.paid }}\"")
                self._render = env.compile_expression(source, undefined_to_none=False)._template.root_render_func
                self.native = True
                self._chain = _chain(env, source)
            elif m:
                expr = m.group("expr").strip()
                self._render = env.compile_expression(expr, undefined_to_none=False)._template.root_render_func
                self.native = True
                self._chain = _chain(env, expr)
            else:
                self._render = env.from_string(source).root_render_func
                self.native = False
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"template syntax error: {_explained(env, exc.message or '')}") from None

    def __call__(self, ctx: "dict[str, Any] | Scope") -> Any:
        scope = ctx if isinstance(ctx, Scope) else Scope(self.env, ctx)
        try:
            if self._chain is not None:
                value = _walk(self.env, self._chain, scope)
                if value is not _SLOW:
                    return value
            jctx = scope.jinja()
            if self.native:
                for _ in self._render(jctx):
                    pass
                value = jctx.vars.pop("result")
                jctx.exported_vars.discard("result")
                if isinstance(value, Undefined):
                    value._fail_with_undefined_error()
                return value
            return self.env.concat(self._render(jctx))
        except SecurityError as exc:
            raise TemplateProblem(f"blocked by the sandbox: {exc}") from None
        except UndefinedError as exc:
            raise TemplateProblem(f"undefined: {exc.message}") from None
        except TemplateProblem:
            raise
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise TemplateProblem(f"{type(exc).__name__}: {exc}") from None


# ---- static checks used by `validate` (no data needed) ----------------------

def _static_text(source: str, expression: bool) -> str:
    return source if not expression or _SINGLE_EXPR.match(source) else "{{ " + source + " }}"


@lru_cache(maxsize=4096)
def _parsed(env: Environment, text: str) -> nodes.Template:
    """One parse per template text for the static checks (a mapping shared by flows is read once)."""
    return env.parse(text)


@lru_cache(maxsize=4096)
def _undeclared(env: Environment, text: str) -> frozenset[str]:
    from jinja2 import meta

    return frozenset(meta.find_undeclared_variables(_parsed(env, text)))   # costs a code generation: once


def referenced_names(env: Environment, source: str, *, expression: bool = False) -> frozenset[str]:
    """Top-level names a template reads, for the undefined-name check at validate time."""
    return _undeclared(env, _static_text(source, expression))


def unsafe_attributes(env: Environment, source: str, *, expression: bool = False) -> list[str]:
    """Attribute names the sandbox would refuse (``__class__`` and friends)."""
    ast = _parsed(env, _static_text(source, expression))
    bad = []
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else (
            node.arg.value if isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str) else None)
        if name and name.startswith("_"):
            bad.append(name)
    return bad


# a chain under these reads a field that may be absent on purpose
_ABSENCE_TESTS = {"defined", "undefined"}
_ABSENCE_FILTERS = {"default", "d"}


def attribute_chains(env: Environment, source: str, *, expression: bool = False) -> tuple[tuple[str, tuple], ...]:
    """Every ``name.field['key'][0].more`` the template reads from an undeclared name, as
    (name, parts): a part is a field name, or None for an index that is not a string
    (``[0]``, ``[i]``). Chains tested with ``is defined`` or passed to ``default`` are left out."""
    return _chains(env, _static_text(source, expression))


@lru_cache(maxsize=4096)
def _chains(env: Environment, text: str) -> tuple[tuple[str, tuple], ...]:
    """attribute_chains, once per template text (a mapping shared by many flows is read once)."""
    ast, free = _parsed(env, text), _undeclared(env, text)
    links = (nodes.Getattr, nodes.Getitem)
    inner = {id(n.node) for n in ast.find_all(links) if isinstance(n.node, links)}
    inner |= {id(n.node) for n in ast.find_all(nodes.Test) if n.name in _ABSENCE_TESTS}
    inner |= {id(n.node) for n in ast.find_all(nodes.Filter) if n.name in _ABSENCE_FILTERS}
    out = []
    for node in ast.find_all(links):
        if id(node) in inner:
            continue
        parts: list = []
        while isinstance(node, links):
            if isinstance(node, nodes.Getattr):
                parts.append(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                parts.append(node.arg.value)
            else:
                parts.append(None)
            node = node.node
        if isinstance(node, nodes.Name) and node.name in free:
            out.append((node.name, tuple(reversed(parts))))
    return tuple(out)
