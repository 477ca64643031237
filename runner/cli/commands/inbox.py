"""inbox list / inbox show: what came in, and each event's story (flows, operations, attempts)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inbox", help="look at received events and what became of them")
    isub = p.add_subparsers(dest="inbox_command", metavar="SUBCOMMAND")
    q = isub.add_parser("list", help="recent events: received time, status, flows, error")
    q.add_argument("--status", choices=["pending", "dispatched", "ignored", "failed"])
    q.add_argument("--limit", type=int, default=50)
    q.set_defaults(func=cmd_inbox_list)
    q = isub.add_parser("show", help="one event's story: the event, each flow that matched, each operation with "
                                     "its payload, attempts, outcome and target document")
    q.add_argument("event_id")
    how = q.add_mutually_exclusive_group()
    how.add_argument("--payload", action="store_true",
                     help="print only the event's JSON as received (for preview, run and flow tests)")
    how.add_argument("--json", action="store_true", help="the story as JSON (payloads redacted)")
    q.set_defaults(func=cmd_inbox_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_inbox_list(args) -> int:
    from runner.app import App
    from runner.deliver.timeline import utc
    app = App()
    print("event\ttype\taccount\treceived (UTC)\tstatus\tflows\terror")
    for r in app.store.list_events(status=args.status or None, limit=args.limit):
        error = (r["error"] or "").splitlines()[0][:300] if r["error"] else "-"
        print(f"{r['event_id']}\t{r['type']}\t{r['account'] or '-'}\t{utc(r['received_at'])}\t{r['status']}\t"
              f"{r['flows'] or '-'}\t{error}")
    return 0


def cmd_inbox_show(args) -> int:
    from runner.app import App
    from runner.core import jsonio
    from runner.core.errors import LedgerflowError
    from runner.deliver.timeline import story, story_lines
    app = App()
    if args.payload:
        row = app.store.get_event(args.event_id)
        if not row:
            raise LedgerflowError(f"no event {args.event_id} in the inbox (see `ledgerflow inbox list`)")
        print(row["payload"])
        return 0
    s = story(app, args.event_id)
    if args.json:
        print(jsonio.dumps(s.as_json(), indent=2))
        return 0
    for line in story_lines(s):
        print(line)
    return 0
