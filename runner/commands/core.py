"""validate, preview, run, inbox."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check flows, mappings and the project file; print file:line:col problems")
    p.add_argument("paths", nargs="*", default=None, help="flow files or folders (default: flows/)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("preview", help="show the operations a flow would produce for an event, sending nothing")
    p.add_argument("flow", help="flow file or name")
    p.add_argument("--event", required=True, help="Stripe event JSON file")
    p.add_argument("--json", action="store_true", help="print only a JSON array of operations")
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("run", help="run a flow for one event for real, inside a Prefect flow run")
    p.add_argument("flow", help="flow file or name")
    p.add_argument("--event", required=True, help="Stripe event JSON file")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inbox", help="look at received events")
    isub = p.add_subparsers(dest="inbox_command", metavar="SUBCOMMAND")
    q = isub.add_parser("list", help="recent events")
    q.add_argument("--status", choices=["pending", "dispatched", "ignored", "failed"])
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(func=cmd_inbox_list)
    q = isub.add_parser("show", help="print one event's JSON (usable with preview, run and flow tests)")
    q.add_argument("event_id")
    q.set_defaults(func=cmd_inbox_show)


def cmd_validate(args) -> int:
    from ..validate import validate_paths
    problems, counted = validate_paths(args.paths or None)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {counted} file(s)", file=sys.stderr)
        return 1
    print(f"ok: {counted} file(s) valid", file=sys.stderr)
    return 0


def _plan_one(args):
    from ..app import App
    from ..events import load_event_file
    app = App()
    flow = app.flow(args.flow)
    event, raw = load_event_file(args.event)
    return app, flow, event, raw


def cmd_preview(args) -> int:
    from .. import jsonio
    app, flow, event, _ = _plan_one(args)
    ops = app.plan_event(event, flow)
    if args.json:
        print(jsonio.dumps([op.as_dict() for op in ops], indent=2))
        return 0
    print(f"flow {flow.name} ({flow.file}) on {event['type']} {event['id']}")
    if not flow.matches(event["type"]):
        print(f"  note: the trigger ({', '.join(flow.stripe_types) or 'none'}) does not match {event['type']}")
    if not ops:
        print("  filtered out: no operations")
    for op in ops:
        print(f"\n  route {op.route} -> {op.connection} ({op.connector_type}.{op.action})")
        print(f"  idempotency key: {op.idempotency_key}")
        for line in jsonio.dumps(op.payload, indent=2).splitlines():
            print("    " + line)
    return 0


def cmd_run(args) -> int:
    from ..run import run_event
    app, flow, event, raw = _plan_one(args)
    result = run_event(app, flow, event, raw, source=f"cli:{Path(args.event).name}")
    for line in result.lines():
        print(line)
    return 0 if not result.dead else 1


def cmd_inbox_list(args) -> int:
    from ..app import App
    from ..store.tables import inbox
    from sqlalchemy import select
    app = App()
    from datetime import datetime, timezone
    q = select(inbox.c.event_id, inbox.c.type, inbox.c.account, inbox.c.status, inbox.c.source,
               inbox.c.received_at, inbox.c.flows, inbox.c.error).order_by(inbox.c.received_at.desc()).limit(args.limit)
    if args.status:
        q = q.where(inbox.c.status == args.status)
    with app.store.engine.connect() as c:
        rows = c.execute(q).all()
    print("event\ttype\taccount\treceived (UTC)\tstatus\tflows\terror")
    for r in rows:
        when = datetime.fromtimestamp(r.received_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        error = (r.error or "").splitlines()[0][:300] if r.error else "-"
        print(f"{r.event_id}\t{r.type}\t{r.account or '-'}\t{when}\t{r.status}\t{r.flows or '-'}\t{error}")
    return 0


def cmd_inbox_show(args) -> int:
    from ..app import App
    from ..errors import LedgerflowError
    app = App()
    row = app.store.get_event(args.event_id)
    if not row:
        raise LedgerflowError(f"no event {args.event_id} in the inbox")
    print(row["payload"])
    return 0
