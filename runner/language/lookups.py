"""Resolve a flow's look-ups for one event (the I/O step before the pure plan)."""

from __future__ import annotations

from datetime import date
from typing import Any, Mapping

from runner.core.errors import Problem, RenderError
from runner.core.fx import FxError, provider
from runner.language.planner import PlanContext, template_context
from runner.language.spec import Flow
from runner.language.templating import TemplateProblem


def render_params(lk: Any, values: dict[str, Any], flow: Flow) -> dict[str, Any]:
    """A look-up's parameters rendered for one event; errors name the flow line."""
    params: dict[str, Any] = {}
    for k, compiled in lk.params.items():
        try:
            params[k] = compiled(values) if callable(compiled) else compiled
        except TemplateProblem as exc:
            line, col = flow.doc.where(("lookups", lk.name, lk.kind, k))
            raise RenderError(str(exc), Problem(flow.file, line, col, f"lookups.{lk.name}.{k}: {exc}")) from None
    return params


class LazyLookup:
    """A look-up's result, resolved the first time a template reads it (a flow whose
    routes never read ``rate`` never asks for one)."""

    __slots__ = ("_fn", "_value", "_done")

    def __init__(self, fn):
        self._fn = fn
        self._done = False
        self._value = None

    def resolve(self) -> Any:
        if not self._done:
            self._value = self._fn()
            self._done = True
        return self._value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def __str__(self) -> str:
        return str(self.resolve())


def resolve_lookups(event: Mapping[str, Any], flow: Flow, ctx: PlanContext,
                    pinned: Mapping[str, Any] | None = None, *, lazy: bool = False) -> dict[str, Any]:
    """Results by look-up name. ``pinned`` results (from a flow test) win. ``lazy``: each
    result is a :class:`LazyLookup`, resolved when a template first reads it."""
    pinned = dict(pinned or {})
    values = template_context(event, flow, ctx)
    results: dict[str, Any] = {}
    for lk in flow.lookups:
        if lk.name in pinned:
            results[lk.name] = pinned[lk.name]
        elif lazy:
            results[lk.name] = LazyLookup(lambda lk=lk: _resolve_one(lk, values, flow, ctx))
        else:
            results[lk.name] = _resolve_one(lk, values, flow, ctx)
        values[lk.name] = results[lk.name]
    return results


def _resolve_one(lk: Any, values: dict[str, Any], flow: Flow, ctx: PlanContext) -> Any:
    params = render_params(lk, values, flow)
    if lk.kind == "fx":
        on = date.fromisoformat(str(params.get("on"))[:10]) if params.get("on") else date.today()
        name = lk.provider or ctx.settings.get("fx_provider", "ecb")
        try:
            return provider(name, ctx.settings).rate(str(params["from"]), str(params["to"]), on)
        except FxError as exc:
            line, col = flow.doc.where(("lookups", lk.name))
            raise RenderError(str(exc), Problem(flow.file, line, col, f"lookups.{lk.name}: {exc}")) from None
    raise RenderError("", Problem(flow.file, 1, 1, f"lookups.{lk.name}: unknown look-up kind {lk.kind!r}"))
