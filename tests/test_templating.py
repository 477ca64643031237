"""The sandboxed templates' fast paths answer exactly as Jinja does: a field chain read
without a Jinja frame, the sandbox's verdict kept per (type, attribute), no Jinja globals;
and jsonio writes what json.dumps writes."""

from __future__ import annotations

import enum
import json
from decimal import Decimal as D
from types import BuiltinMethodType

import pytest

from runner.core import jsonio
from runner.language.templating import Compiled, Scope, TemplateProblem, environment


class Thing:
    append = "a field named append"
    amount = D("1.50")
    _private = "hidden"

    def label(self) -> str:
        return "thing"


VALUES = {"a": {"b": {"c": 5}, "items": [1, 2], "n": None}, "lst": [10, 20], "thing": Thing(), "s": "x{}",
          "u": None, "d": D("2.50")}
CHAINS = ["a.b.c", "a.b", "a['b']['c']", "a.items", "a.keys", "a.n", "lst[1]", "lst[5]", "lst.append", "lst.pop",
          "thing.append", "thing.amount", "thing._private", "thing.__class__", "thing.label", "thing.missing",
          "s.format", "a.b.c.d", "missing", "missing.field", "u.field", "d.real", "a.b.__class__", "d.as_tuple"]


def outcome(compiled: Compiled, values) -> tuple:
    try:
        value = compiled(values)
    except TemplateProblem as exc:
        return ("problem", str(exc))
    if callable(value):
        return ("callable", getattr(value, "__name__", "?"), isinstance(value, BuiltinMethodType))
    return ("value", type(value).__name__, value)


@pytest.mark.parametrize("expr", CHAINS)
def test_a_field_chain_reads_what_jinja_reads(expr):
    env = environment()
    fast = Compiled(env, "{{ " + expr + " }}")
    slow = Compiled(env, "{{ " + expr + " }}")
    assert fast._chain is not None
    slow._chain = None                  # Jinja's compiled code, as before the fast path
    assert outcome(fast, dict(VALUES)) == outcome(slow, dict(VALUES))
    cond = Compiled(env, expr, expression=True)
    assert cond._chain is not None and outcome(cond, dict(VALUES)) == outcome(slow, dict(VALUES))


def test_sandbox_refusals_hold_on_the_fast_path():
    env = environment()
    assert outcome(Compiled(env, "{{ lst.append }}"), VALUES)[1].startswith("blocked by the sandbox")
    assert outcome(Compiled(env, "{{ thing._private }}"), VALUES)[1].startswith("blocked by the sandbox")
    # the verdict is per type: a field named like a list's mutating method is still readable, and after it
    # was read, a list's method is still refused (and the other way round)
    assert Compiled(env, "{{ thing.append }}")(VALUES) == "a field named append"
    assert outcome(Compiled(env, "{{ lst.append }}"), VALUES)[0] == "problem"
    assert Compiled(env, "{{ thing.append }}")(VALUES) == "a field named append"
    # str.format stays the sandbox's own
    fmt = Compiled(env, "{{ s.format }}")(VALUES)
    assert fmt.__name__ == "format" and not isinstance(fmt, BuiltinMethodType)   # the sandbox's wrapper
    with pytest.raises(TemplateProblem, match="sandbox"):
        Compiled(env, "{{ '{0.__class__}'.format(d) }}")(VALUES)


def test_a_name_set_by_a_text_template_shadows_the_values_as_in_jinja():
    env = environment()
    scope = Scope(env, {"x": {"y": 1}, "z": {"y": 2}})
    assert Compiled(env, "{% set x = z %}{{ x.y }}")(scope) == "2"
    assert Compiled(env, "{{ x.y }}")(scope) == 2         # Jinja's context: the set name first


def test_templates_see_no_jinja_globals():
    env = environment()
    assert env.globals == {}
    for source in ("{{ range(3) | list }}", "{{ lipsum() }}", "{{ namespace() }}", "{{ dict(a=1) }}"):
        with pytest.raises(TemplateProblem, match="undefined"):
            Compiled(env, source)({})


class Kind(enum.IntEnum):
    A = 7


@pytest.mark.parametrize("value", ["plain", "h\u00e9llo \"q\" \\ \n\t\u2028\x00 \U0001f600", 0, -12, 10 ** 30, True,
                                   False, None, Kind.A, [1, "a", None], {"k": "v", 5: True}, []])
def test_jsonio_writes_what_json_dumps_writes(value):
    assert jsonio.dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ": "))
    assert jsonio.loads(jsonio.dumps({"n": D("1.10"), "v": value})) == jsonio.loads(json.dumps({"n": 1, "v": value})) \
        | {"n": D("1.10")}
