"""validate, preview, run (inbox and deliveries: runner.cli.commands.inbox, .deliveries)."""

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


def cmd_validate(args) -> int:
    from runner.language.validate import validate_paths
    problems, counted = validate_paths(args.paths or None)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {counted} file(s)", file=sys.stderr)
        return 1
    print(f"ok: {counted} file(s) valid", file=sys.stderr)
    return 0


def _plan_one(args):
    from runner.app import App
    from runner.language.events import load_event_file
    app = App()
    flow = app.flow(args.flow)
    event, raw = load_event_file(args.event)
    return app, flow, event, raw


def cmd_preview(args) -> int:
    from runner.core import jsonio
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
    from runner.deliver.run import run_event
    app, flow, event, raw = _plan_one(args)
    from runner.operate.prefect_server import project_api
    result = run_event(app, flow, event, raw, source=f"cli:{Path(args.event).name}",
                       prefect_api=lambda: project_api(app))
    for line in result.lines():
        print(line)
    return 0 if not result.dead else 1
