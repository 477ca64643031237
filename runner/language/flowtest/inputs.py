"""A case's input: its event (file, Stripe example object or inline) and pinned look-ups."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

from runner.core.errors import EventError, LedgerflowError
from runner.language.flowtest.compare import plain


def build_event(spec: Any, base_dir: Path, project_dir: Path) -> dict[str, Any]:
    """The event a case describes; raises EventError/LedgerflowError with a user-facing message.

    * ``"events/refund.json"``: a JSON Stripe event, relative to the test file;
    * ``{from_fixture: charge.succeeded, set: {...}, account: acct_..}``: Stripe's
      example object with overrides (nothing is copied into the project);
    * ``{id, type, data: {object}}``: an inline event.
    """
    from runner.language.planner import check_event

    if isinstance(spec, str):
        from runner.language.events import load_event_file
        path = Path(spec) if Path(spec).is_absolute() else base_dir / spec
        if path.is_dir():
            raise EventError(f"{spec}: is a folder (expected a JSON Stripe event file)")
        event, _ = load_event_file(path)
        return event
    if isinstance(spec, Mapping) and "from_fixture" in spec:
        from runner.language.fixtures import event_from_fixture
        return event_from_fixture(spec["from_fixture"], resource=spec.get("resource"),
                                  overrides=plain(dict(spec.get("set") or {})), account=spec.get("account"),
                                  created=spec.get("created"), project_dir=project_dir)
    event = plain(spec)
    check_event(event, "inline event")
    return event


def pinned_lookups(case_lookups: Mapping[str, Any], event: Mapping[str, Any], flow: Any,
                   ctx: Any) -> dict[str, Any]:
    """Pinned results in the form the flow's templates read.

    An fx look-up pinned as a rate (``"1.0834"``) or ``{rate, source, date}``
    becomes a ``Rate`` whose currencies and date come from the look-up's own
    parameters for this event; other look-ups are used as written.
    """
    kinds = {lk.name: lk for lk in flow.lookups}
    out: dict[str, Any] = {}
    for name, value in case_lookups.items():
        if name == "balance_transaction" and name not in kinds:
            out[name] = plain(value)
            continue
        lk = kinds[name]
        out[name] = _fx_rate(lk, plain(value), event, flow, ctx) if lk.kind == "fx" else plain(value)
    return out


def _fx_rate(lk: Any, value: Any, event: Mapping[str, Any], flow: Any, ctx: Any) -> Any:
    from runner.core.fx import Rate
    from runner.language.lookups import render_params
    from runner.language.planner import template_context

    spec = value if isinstance(value, Mapping) else {"rate": value}
    try:
        rate = Decimal(str(spec.get("rate")).strip())
    except InvalidOperation:
        raise LedgerflowError(f"lookups.{lk.name}: expected a rate such as \"1.0834\", got {spec.get('rate')!r}") from None
    params = render_params(lk, template_context(event, flow, ctx), flow)
    on = spec.get("date") or str(params.get("on") or "")[:10]
    return Rate(str(spec.get("base") or params.get("from", "")).upper(), str(spec.get("quote") or params.get("to", "")).upper(),
                rate, str(spec.get("source") or "pinned"), str(on))
