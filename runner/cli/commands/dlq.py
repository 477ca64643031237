"""dlq: the dead-letter queue (list, show, replay, discard)."""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dlq", help="the dead-letter queue: list, show, replay after a fix, discard with a reason")
    dsub = p.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND")
    q = dsub.add_parser("list", help="dead-lettered deliveries: id, flow, route, target, error, attempts, age")
    q.add_argument("--flow", help="only this flow")
    q.add_argument("--alert", metavar="KEY", help="only the dead letters of this Slack alert (its key: same flow, "
                                                  "target and error)")
    q.add_argument("--limit", type=int, default=200)
    q.set_defaults(func=cmd_list)
    q = dsub.add_parser("show", help="one dead delivery: its event, payload and every attempt's error")
    q.add_argument("id", type=int)
    q.set_defaults(func=cmd_show)
    q = dsub.add_parser("replay", help="re-plan from the stored event with the current flow and mappings, "
                                       "keep the idempotency key, and deliver again")
    q.add_argument("id", type=int, nargs="?", help="delivery id (or --all)")
    q.add_argument("--all", action="store_true", help="every dead delivery (of --flow, when given); also re-plans "
                                                      "that flow's deliveries still retrying with an old payload")
    q.add_argument("--flow", help="with --all: only this flow")
    q.add_argument("--alert", metavar="KEY", help="with --all: only the dead letters a Slack alert names (its key)")
    q.add_argument("--queue", action="store_true", help="only put them back in the queue for the workers; "
                                                        "do not deliver now")
    q.set_defaults(func=cmd_replay)
    q = dsub.add_parser("discard", help="give up on a dead delivery; the reason goes to the audit log")
    q.add_argument("id", type=int)
    q.add_argument("--reason", required=True, help="why (kept in the audit log)")
    q.set_defaults(func=cmd_discard)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_list(args) -> int:
    from runner.app import App
    from runner.cli.commands.deliveries import one_line, print_table
    from runner.deliver.dlq import age, dead
    app = App()
    rows = dead(app.store, flow=args.flow, limit=args.limit, alert=args.alert)
    if not rows:
        print("the dead-letter queue is empty" + _scope(args))
        return 0
    now = time.time()
    table = [("ID", "FLOW", "ROUTE", "TARGET", "ATTEMPTS", "AGE", "ERROR")]
    for r in rows:
        table.append((str(r.id), r.flow, r.route, f"{r.connection}.{r.action}", str(r.attempts),
                      age(now - r.updated_at), one_line(r.last_error, 70)))
    print_table(table)
    print(f"\n{len(rows)} dead. `ledgerflow dlq show ID` for details; fix the mapping, then "
          f"`ledgerflow dlq replay ID` (or --all).", file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    from runner.app import App
    from runner.core import jsonio
    from runner.deliver.dlq import get_dead
    app = App()
    row = get_dead(app.store, args.id)
    print(f"delivery {row.id}  {row.flow} / {row.route} -> {row.connection} ({row.connector_type}."
          f"{row.action})")
    print(f"idempotency key: {row.idempotency_key}")
    print(f"flow file: {row.flow_file or '-'}")
    event = app.store.get_event(row.event_id) if row.event_id else None
    if event:
        received = time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(event['received_at']))
        print(f"event: {event['event_id']} {event['type']} (received {received} UTC, "
              f"source {event['source']}); its story: ledgerflow inbox show {event['event_id']} (--payload: the JSON)")
    else:
        print(f"event: {row.event_id or '-'} (not in the inbox: replay sends the stored payload)")
    print("payload:")
    for line in jsonio.dumps(row.payload, indent=2).splitlines():
        print("  " + line)
    print("attempts:")
    for a in app.store.attempts_of(row.id):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a["at"]))
        run = f" run {a['flow_run_id']}" if a.get("flow_run_id") else ""
        print(f"  #{a['attempt']} {when} UTC {a['outcome']}{run}: {a.get('error') or ''}")
    print(f"replay after the fix: ledgerflow dlq replay {row.id}")
    return 0


def _scope(args) -> str:
    return (f" for flow {args.flow}" if args.flow else "") + (f" for alert {args.alert}" if args.alert else "")


def _replan_retrying(app, args, dead_rows: list[dict]) -> list[int]:
    """--all: re-plan the same flow's rows still retrying with an old payload; the ids due now."""
    from runner.deliver.dlq import replan_retrying
    connections = sorted({r.connection for r in dead_rows}) if args.alert else None
    if args.alert and not connections:
        return []
    report = replan_retrying(app, flow=args.flow, connections=connections)
    for line in report.lines():
        print(line)
    return report.replanned


def cmd_replay(args) -> int:
    from runner.app import App
    from runner.core.errors import LedgerflowError
    from runner.deliver.dlq import DlqError, dead, replay
    if args.all == (args.id is not None):
        raise LedgerflowError("dlq replay: give a delivery id or --all (with an optional --flow), not both")
    if (args.flow or args.alert) and not args.all:
        raise LedgerflowError("dlq replay: --flow and --alert go with --all")
    app = App()
    dead_rows = dead(app.store, flow=args.flow, alert=args.alert) if args.all else []
    ids = [r.id for r in dead_rows] if args.all else [args.id]
    retrying = _replan_retrying(app, args, dead_rows) if args.all else []
    if not ids and not retrying:
        print("nothing to replay: the dead-letter queue is empty" + _scope(args))
        return 0
    queued, failed = [], 0
    for did in ids:
        try:
            r = replay(app, did)
        except DlqError as exc:
            if not args.all:
                raise
            print(f"{did}: not replayed: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(r.line())
        queued.append(did)
    queued += retrying
    if queued and not args.queue:
        from runner.deliver.prefect_flows import deliver_batch
        from runner.operate.prefect_server import project_api
        with project_api(app):
            for i in range(0, len(queued), 100):
                chunk = queued[i:i + 100]
                deliver_batch(project_file=str(app.project.path), delivery_ids=chunk, limit=len(chunk))
        for did in queued:
            row = app.store.delivery(did)
            state = {"sent": f"delivered [{row.target_ref or ''}]", "retrying": "will retry",
                     "dead": "dead again", "pending": "queued", "sending": "taken by a worker"}.get(row.state,
                                                                                               row.state)
            line = f"{did}: {state}"
            if row.state in ("dead", "retrying") and row.last_error:
                line += f": {row.last_error}"
            print(line)
        failed += sum(1 for did in queued if app.store.delivery(did).state == "dead")
    elif queued:
        print(f"{len(queued)} queued for the workers")
    return 1 if failed else 0


def cmd_discard(args) -> int:
    from runner.app import App
    from runner.deliver.dlq import discard
    app = App()
    discard(app, args.id, args.reason)
    print(f"{args.id}: discarded (recorded in the audit log)")
    return 0
