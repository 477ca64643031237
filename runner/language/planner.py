"""plan(event, flow, context) -> operations. Pure and deterministic.

No network, no database: look-up results come in through the context. This
is what ``preview`` prints, what ``run`` and the dispatcher deliver, and what
``ledgerflow test`` compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from runner.core.errors import EventError, Problem, RenderError
from runner.language.mapping import field_name
from runner.language.posting.events import MOVEMENTS
from runner.language.posting.source import LazyDocument, LazyPosting
from runner.language.spec import Flow, Route
from runner.language.templating import Scope, TemplateProblem, environment


@dataclass
class Operation:
    flow: str
    route: str
    connection: str
    connector_type: str
    action: str
    idempotency_key: str
    payload: dict[str, Any]
    event_id: str | None = None
    flow_file: str | None = None
    max_attempts: int | None = None
    retry_policy: str | None = None   # JSON of the flow's retry policy, kept with the delivery
    posting: dict[str, Any] | None = None   # the movement it books (accounting model), when the flow reads one

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow, "route": self.route, "connection": self.connection,
                "connector_type": self.connector_type, "action": self.action,
                "idempotency_key": self.idempotency_key, "event_id": self.event_id,
                "payload": self.payload}


@dataclass
class PlanContext:
    """Everything plan needs besides the event and the flow."""

    settings: Mapping[str, Any]
    connection_types: Mapping[str, str]
    lookups: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    connections: Mapping[str, Any] = field(default_factory=dict)   # connection configs, for payload_check hooks
    postings: Any = None                  # posting.source.PostingSource: `posting` and `doc` in templates
    pinned_bt: Mapping[str, Any] | None = None   # a flow test's pinned balance transaction
    # what planning one event through several flows shares (its posting, built once): one dict per
    # event, given by the dispatcher; None plans alone
    shared: dict | None = None

    def books_of(self, connection: str) -> str:
        """Whose books a connection holds: a connected account's (accounting.connect.account_books)
        or the platform's."""
        books = getattr(getattr(self.postings, "policy", None), "account_books", None) or {}
        for account, conn in books.items():
            if conn == connection:
                return account
        return "platform"

    def multicurrency(self, connection: str) -> bool:
        cfg = self.connections.get(connection) or {}
        return bool(cfg.get("multicurrency", False)) if isinstance(cfg, Mapping) else False


def object_name(event: Mapping[str, Any]) -> str | None:
    obj = event.get("data", {}).get("object") if isinstance(event.get("data"), Mapping) else None
    kind = obj.get("object") if isinstance(obj, Mapping) else None
    return kind.replace(".", "_") if isinstance(kind, str) else None


def check_event(event: Any, source: str) -> None:
    """An event must be a Stripe-shaped object: id, type and data.object."""
    if not isinstance(event, Mapping):
        raise EventError(f"{source}: expected a JSON object (a Stripe event), got {type(event).__name__}")
    for key in ("id", "type"):
        if not isinstance(event.get(key), str) or not event.get(key):
            raise EventError(f"{source}: the event has no {key!r} (expected a Stripe event with id, type "
                             "and data.object)")
    data = event.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("object"), Mapping):
        raise EventError(f"{source}: the event has no data.object (expected a Stripe event)")


def template_context(event: Mapping[str, Any], flow: Flow, ctx: PlanContext) -> dict[str, Any]:
    obj = event["data"]["object"]
    values: dict[str, Any] = {
        "event": event, "data": obj, "object": obj, "account": event.get("account"),
        "settings": ctx.settings, "vars": flow.vars, "lookups": dict(ctx.lookups),
        "flow": {"name": flow.name}, "params": dict(ctx.params),
    }
    name = object_name(event)
    if name:
        values[name] = obj
    values.update(ctx.lookups)
    values["posting"] = LazyPosting(lambda: _posting(event, ctx))
    return values


def _posting(event: Mapping[str, Any], ctx: PlanContext):
    from runner.language.posting.model import PostingError
    if ctx.postings is None:
        raise PostingError("templates read `posting`, but this planner was given no accounting model "
                           "(App.context() gives one)")
    if ctx.shared is None or ctx.pinned_bt is not None:
        return ctx.postings.for_event(event, ctx.pinned_bt)
    # the posting depends on the event and the accounting model only, never on the flow
    key = ("posting", ctx.postings)
    hit = ctx.shared.get(key)
    if hit is None or hit[0] is not event:
        hit = ctx.shared[key] = (event, ctx.postings.for_event(event))
    return hit[1]


def _eval(compiled, values: dict, flow: Flow, path: tuple, what: str) -> Any:
    try:
        return compiled(values)
    except TemplateProblem as exc:
        line, col = flow.doc.where(path)
        raise RenderError(str(exc), Problem(flow.file, line, col, f"{what}: {exc}")) from None


def routes_firing(event: Mapping[str, Any], flow: Flow, values: dict) -> list[tuple[int, Route]]:
    fired = []
    for i, route in enumerate(flow.routes):
        if route.fallback:
            continue
        if route.when is None or _eval(route.when, values, flow, ("routes", i, "when"), f"routes[{i}].when"):
            fired.append((i, route))
    if not fired:
        fired = [(i, r) for i, r in enumerate(flow.routes) if r.fallback]
    return fired


def plan(event: Mapping[str, Any], flow: Flow, ctx: PlanContext) -> list[Operation]:
    """The operations this event produces through this flow (empty when filtered out)."""
    if flow.reads_posting and event.get("type") not in MOVEMENTS:
        return []          # a wildcard trigger (charge.*) brings events that move no money: nothing to book
    values = template_context(event, flow, ctx)
    scope = Scope(environment(ctx.settings.get("timezone", "UTC")), values)
    if flow.filter is not None and not _eval(flow.filter, scope, flow, ("filter",), "filter"):
        return []
    ops = []
    for i, route in routes_firing(event, flow, scope):
        values["route"] = {"name": route.name}       # the Jinja context reads `values` live
        if flow.reads_posting:
            # the Connect policy, not a filter, decides whose books a movement belongs to
            # (known from the event alone: no balance transaction is fetched for a skipped route)
            if (event.get("account") or "platform") != ctx.books_of(route.target):
                continue
            values["doc"] = LazyDocument(values["posting"], ctx.multicurrency(route.target))
        payload = route.mapping.render(scope)
        if route.idempotency_key is not None:
            key = str(_eval(route.idempotency_key, scope, flow, ("routes", i, "idempotency_key"),
                            f"routes[{i}].idempotency_key")).strip()
            if not key:
                line, col = flow.doc.where(("routes", i, "idempotency_key"))
                raise RenderError("", Problem(flow.file, line, col, f"routes[{i}].idempotency_key rendered empty"))
        elif flow.reads_posting:
            # the movement's own id: charge.succeeded and payment_intent.succeeded of one payment, or
            # refund.created and refund.updated of one refund, book it once
            key = f"{flow.name}:{route.name}:{values['posting'].key}"
        else:
            key = f"{flow.name}:{route.name}:{event['id']}"
        ctype = ctx.connection_types[route.target]
        payload = conform_payload(payload, ctype, route)
        check_for_connection(payload, ctype, route, ctx)
        ops.append(Operation(flow=flow.name, route=route.name, connection=route.target, connector_type=ctype,
                             action=route.action, idempotency_key=key, payload=payload,
                             event_id=event.get("id"), flow_file=flow.file,
                             max_attempts=flow.retry.attempts, retry_policy=flow.retry.as_json(),
                             posting=values["posting"].record() if flow.reads_posting else None))
    return ops


# ---- payload checks against the action's schema -----------------------------

def conform_payload(payload: dict, connector_type: str, route: Route) -> dict:
    """Validate against the action's schema; where the schema wants a number and
    the mapping rendered a numeric string, make it a Decimal first.

    Errors point at the mapping line that produced the field.
    """
    from runner.language import schemacheck

    action = _action(connector_type, route.action)
    rendered = payload
    valid = schemacheck.is_valid(action.schema, payload)
    if not valid:       # coerce numeric strings, then check again
        payload = _coerce(payload, action.schema, action.schema)
        valid = schemacheck.is_valid(action.schema, payload)
    if not valid:       # jsonschema (imported only now) explains what is wrong
        errors = sorted(schemacheck.iter_errors(action.schema, payload), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            err = errors[0]
            path = tuple(err.absolute_path)
            raise RenderError("", _mapping_problem(route, path, f"{field_name(path)}: {_describe(err)} "
                                                                f"(action {connector_type}.{route.action})", rendered))
    _no_floats(payload)
    if action.check:
        issues = action.check(payload)
        if issues:
            raise RenderError("", _mapping_problem(route, (), f"{connector_type}.{route.action}: " + "; ".join(issues)))
    return payload


def _no_floats(value: Any) -> None:
    if isinstance(value, float):
        raise RenderError("", Problem("(payload)", 1, 1, f"a float ({value!r}) reached a payload; use the money "
                                                         "or decimal filter so money stays exact"))
    if isinstance(value, dict):
        for v in value.values():
            _no_floats(v)
    elif isinstance(value, list):
        for v in value:
            _no_floats(v)


def check_for_connection(payload: dict, connector_type: str, route: Route, ctx: PlanContext) -> None:
    """The connector type's ``check_payload`` hook, given the connection's settings (e.g. a QBO
    company without multicurrency refuses a foreign CurrencyRef)."""
    from connectors import registry

    hook = registry.payload_check(connector_type)
    if hook and route.target in ctx.connections:
        issues = hook(route.action, payload, ctx.connections[route.target], ctx.settings)
        if issues:
            raise RenderError("", _mapping_problem(route, (), f"{route.target} ({connector_type}.{route.action}): "
                                                              + "; ".join(issues)))


def _describe(err) -> str:
    if err.validator == "type":
        return f"expected {err.validator_value}, got {err.instance!r}"
    if err.validator == "required":
        return err.message + " (the mapping left it out or it rendered empty)"
    return err.message


_ACTIONS: dict[tuple[str, str], Any] = {}


def _action(ctype: str, action_name: str):
    """The connector's action, cached. runner.language.schemacheck compiles its schema once
    (fastjsonschema) for the hot path and imports jsonschema only to explain a failure."""
    key = (ctype, action_name)
    if key not in _ACTIONS:
        from connectors import registry
        _ACTIONS[key] = registry.actions_for(ctype)[action_name]
    return _ACTIONS[key]


def _coerce(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    from runner.language.schemacheck import resolve_ref
    schema = resolve_ref(schema, root)
    t = schema.get("type")
    types = t if isinstance(t, list) else [t]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props.get(k, {}), root) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [_coerce(v, items, root) for v in value]  # origins stay on the rendered payload
    if isinstance(value, str) and ("number" in types) and "string" not in types:
        try:
            d = Decimal(value.strip())
            if d.is_finite():
                return d
        except InvalidOperation:
            pass
    return value


def _mapping_problem(route: Route, path: tuple, message: str, payload: Any = None) -> Problem:
    file, line, col = mapping_location(route, path, payload)
    return Problem(file, line, col, message)


def mapping_location(route: Route, path: tuple, payload: Any = None) -> tuple[str, int, int]:
    """The mapping file, line and column that produce ``path`` of the route's payload
    (the nearest mapped ancestor when the field itself is not mapped). With the
    rendered ``payload``, list elements are traced to the loop or item behind them."""
    doc = route.mapping.doc
    mpath: tuple = ()
    data: Any = doc.data
    for part in path:
        origins = getattr(payload, "origins", None)
        if isinstance(data, list) and origins is not None and isinstance(part, int) and part < len(origins):
            idx = origins[part]
            item = data[idx]
            if isinstance(item, dict) and "$for" in item:
                mpath += (idx, "$each")
                data = item["$each"]
            else:
                mpath += (idx,)
                data = item
            payload = payload[part]
            continue
        if isinstance(payload, dict):
            payload = payload.get(part)
        elif isinstance(payload, list) and isinstance(part, int) and part < len(payload):
            payload = payload[part]
        else:
            payload = None
        if isinstance(data, dict):
            key = part if part in data else (f"{part}?" if f"{part}?" in data else None)
            if key is None:
                break
            mpath += (key,)
            data = data[key]
        elif isinstance(data, list):
            loops = [i for i, x in enumerate(data) if isinstance(x, dict) and "$for" in x]
            if loops:
                mpath += (loops[0], "$each")
                data = data[loops[0]]["$each"]
            elif isinstance(part, int) and part < len(data):
                mpath += (part,)
                data = data[part]
            else:
                break
        else:
            break
    line, col = doc.where(mpath)
    return doc.file, line, col
