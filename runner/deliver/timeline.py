"""An event's story: what came in, which flows took it, what each operation became.

``ledgerflow inbox show ID`` prints it; ``ledgerflow deliveries list`` is the
same rows across events. Everything comes from the store (the inbox row, the
delivery rows keyed by event id, their attempts), so the story is the same on
every machine that shares the store. Payloads are shown through
``redact.redact_payload``: the mapping's output without the customer's name,
email, card or phone number. The event's own JSON stays available for scripts
(``inbox show ID --payload``).

Plan rows (connection ``(plan)``, see ``runner.deliver.replan``) are a flow's planning
attempts: a flow that could not plan the event, then planned it (or not) on a
later attempt.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from runner.core import jsonio
from runner.core.errors import LedgerflowError
from runner.core.redact import redact_payload
from runner.ingest.plan_rows import CONNECTION as PLAN_CONNECTION

AMOUNT_FIELDS = ("amount", "amount_total", "amount_paid", "amount_due", "net")
DAYS = re.compile(r"^(\d+)d$")


def utc(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def iso(ts: float | None) -> str | None:
    """A stored time for JSON output (never a float: ``jsonio`` keeps money exact)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


@dataclass
class EventFacts:
    """What an alert or a timeline says about an event: no personal data, only these."""
    event_id: str
    type: str | None = None
    object_id: str | None = None
    amount: str | None = None           # "12.34 USD" (Decimal, at the currency's exponent)
    account: str | None = None

    def line(self) -> str:
        parts = [p for p in (self.type, self.object_id, self.amount) if p]
        return " · ".join(parts) or self.event_id


def facts_of(event_id: str, event: dict | None) -> EventFacts:
    """Type, Stripe object id and amount of a stored event (Decimal amount from minor units)."""
    from runner.core.money import MoneyError, from_minor
    if not isinstance(event, dict):
        return EventFacts(event_id)
    obj = ((event.get("data") or {}).get("object")) or {}
    amount = None
    currency = obj.get("currency")
    for name in AMOUNT_FIELDS:
        value = obj.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(currency, str):
            try:
                amount = f"{from_minor(value, currency)} {currency.upper()}"
            except MoneyError:
                amount = f"{value} {currency.upper()} (minor units)"
            break
    return EventFacts(event_id, event.get("type"), obj.get("id"), amount, event.get("account"))


def events_facts(store, event_ids: Iterable[str | None]) -> dict[str, EventFacts]:
    """Facts of several stored events, in one query; ids not in the inbox are left out."""
    out: dict[str, EventFacts] = {}
    for event_id, payload in store.event_payloads(e for e in event_ids if e).items():
        try:
            out[event_id] = facts_of(event_id, jsonio.loads(payload))
        except ValueError:
            out[event_id] = EventFacts(event_id)
    return out


# ---- the story of one event --------------------------------------------------------------

@dataclass
class Story:
    event: dict                                    # the inbox row (payload as stored)
    facts: EventFacts
    deliveries: list[dict] = field(default_factory=list)   # each with its attempts as "history"
    matching_flows: list[str] = field(default_factory=list)

    def flows(self) -> list[str]:
        """Every flow the story touches: those with rows first, then those that matched without rows."""
        seen = list(dict.fromkeys(d["flow"] for d in self.deliveries))
        planned = [f for f in (self.event.get("flows") or "").split(",") if f.strip()]
        return list(dict.fromkeys([*seen, *(f.strip() for f in planned), *self.matching_flows]))

    def as_json(self) -> dict[str, Any]:
        ev = self.event
        return {"event": {"id": ev["event_id"], "type": ev["type"], "object": self.facts.object_id,
                          "amount": self.facts.amount, "account": ev.get("account"), "source": ev.get("source"),
                          "received_at": iso(ev.get("received_at")), "status": ev.get("status"),
                          "flows": ev.get("flows"), "error": ev.get("error")},
                "flows": [{"flow": f, "operations": [_op_json(d) for d in self.deliveries if d["flow"] == f]}
                          for f in self.flows()]}


def _op_json(d: dict) -> dict[str, Any]:
    keys = ("id", "route", "connection", "connector_type", "action", "state", "attempts", "max_attempts",
            "target_ref", "last_error", "error_kind", "idempotency_key", "created_at", "updated_at", "sent_at",
            "next_attempt_at")
    out = {k: iso(d.get(k)) if k.endswith("_at") else d.get(k) for k in keys}
    out["planning"] = d["connection"] == PLAN_CONNECTION
    out["payload"] = redact_payload(d.get("payload"))
    out["history"] = [{"attempt": a["attempt"], "at": iso(a["at"]), "outcome": a["outcome"], "error": a.get("error"),
                       "worker": a.get("worker"), "flow_run_id": a.get("flow_run_id")} for a in d.get("history", [])]
    return out


def story(app, event_id: str) -> Story:
    row = app.store.get_event(event_id)
    if not row:
        raise LedgerflowError(f"no event {event_id} in the inbox (see `ledgerflow inbox list`)")
    try:
        event = jsonio.loads(row["payload"])
    except ValueError:
        event = None
    rows = [{**r, "history": app.store.attempts_of(r.id)} for r in app.store.find_deliveries(event_id=event_id)]
    try:
        matching = [f.name for f in app.flows_for(row["type"])]
    except Exception:  # noqa: BLE001 - a broken flow file must not hide the story
        matching = []
    return Story(row, facts_of(event_id, event), rows, matching)


def story_lines(s: Story) -> Iterable[str]:
    ev, f = s.event, s.facts
    yield f"event {ev['event_id']}  {f.line()}" + (f"  (account {ev['account']})" if ev.get("account") else "")
    yield f"  received {utc(ev.get('received_at'))} UTC from {ev.get('source') or '-'}; status {ev.get('status')}"
    if ev.get("error"):
        for i, line in enumerate(ev["error"].splitlines()):
            yield ("  error: " if i == 0 else "         ") + line
    flows = s.flows()
    if not flows:
        yield "  no flow matched this event type" if ev.get("status") != "pending" else "  not dispatched yet"
    for flow in flows:
        ops = [d for d in s.deliveries if d["flow"] == flow]
        yield ""
        yield f"flow {flow}" + ("" if ops else ": matched, no operation (filtered out, or no route fired)")
        for d in ops:
            yield from _operation_lines(d)


def _operation_lines(d: dict) -> Iterable[str]:
    planning = d["connection"] == PLAN_CONNECTION
    if planning:
        yield f"  planning (plan row {d['id']}): {d['state']}, {d['attempts']} of {d['max_attempts']} attempt(s)"
        first = (d.get("payload") or {}).get("first_error")
        if first:
            yield f"    first error: {first}"
        if d.get("target_ref"):
            yield f"    result: {d['target_ref']}"
    else:
        yield (f"  operation {d['id']}: route {d['route']} -> {d['connection']} ({d['connector_type']}.{d['action']})"
               f"  {d['state']}, {d['attempts']} of {d['max_attempts']} attempt(s)")
        yield f"    target document: {d.get('target_ref') or '-'}"
        yield f"    idempotency key: {d['idempotency_key']}"
    yield (f"    planned {utc(d.get('created_at'))} UTC, updated {utc(d.get('updated_at'))} UTC"
           + (f", sent {utc(d['sent_at'])} UTC" if d.get("sent_at") else "")
           + (f", next attempt {utc(d['next_attempt_at'])} UTC" if d["state"] in ("pending", "retrying") else ""))
    if not planning:
        yield "    payload:"
        for line in jsonio.dumps(redact_payload(d.get("payload")), indent=2).splitlines():
            yield "      " + line
    for a in d.get("history", []):
        run = f" run {a['flow_run_id']}" if a.get("flow_run_id") else ""
        what = "planning " if planning else ""
        yield (f"    {what}attempt #{a['attempt']} {utc(a['at'])} UTC {a['outcome']}"
               f"{' by ' + a['worker'] if a.get('worker') else ''}{run}" + (f": {a['error']}" if a.get("error") else ""))
    history = d.get("history") or [{}]
    if d.get("last_error") and d["state"] != "sent" and d["last_error"] != history[-1].get("error"):
        yield f"    error: {d['last_error']}"
    if d["state"] == "dead":
        yield f"    retry after the fix: ledgerflow dlq replay {d['id']}"


# ---- --since ----------------------------------------------------------------------------------

def since_timestamp(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now (30m, 2h, 3d) or a date / ISO date-time / unix time."""
    from runner.ingest.catchup import to_timestamp
    from runner.language.spec import parse_duration
    now = time.time() if now is None else now
    text = (text or "").strip()
    days = DAYS.match(text)
    if days:
        return now - int(days.group(1)) * 86400
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return float(to_timestamp(text))
    except LedgerflowError:
        raise LedgerflowError(f"--since {text!r}: expected a duration back from now (30m, 2h, 3d) or a date "
                              "(2026-11-01, an ISO date-time or a unix time)") from None
