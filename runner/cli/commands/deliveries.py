"""deliveries list: every operation across events, filtered by flow, state, target and age."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.store.model import Delivery

STATES = ["pending", "sending", "sent", "retrying", "dead", "discarded"]
HEADER = ("ID", "CREATED (UTC)", "FLOW", "ROUTE", "TARGET", "ACTION", "STATE", "ATTEMPTS", "EVENT", "TARGET REF",
          "ERROR")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deliveries", help="operations planned from events: state, attempts, target document")
    dsub = p.add_subparsers(dest="deliveries_command", metavar="SUBCOMMAND")
    q = dsub.add_parser("list", help="deliveries, newest first: id, created, flow, route, target, action, state, "
                                     "attempts, event, target ref, error")
    q.add_argument("--flow", help="only this flow")
    q.add_argument("--state", choices=STATES, help="only deliveries in this state")
    q.add_argument("--target", metavar="CONNECTION", help="only this connection (as named in ledgerflow.yaml; "
                                                          "'(plan)' for planning rows)")
    q.add_argument("--since", help="created since: a duration back from now (30m, 2h, 3d) or a date (2026-11-01)")
    q.add_argument("--event", help="only this event's deliveries")
    q.add_argument("--limit", type=int, default=100)
    q.add_argument("--json", action="store_true", help="JSON lines, one delivery a line (payloads left out)")
    q.set_defaults(func=cmd_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def one_line(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Aligned columns; the last column (an error, say) is left ragged."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1]).rstrip())


def select_deliveries(app, args) -> list[Delivery]:
    from runner.deliver.timeline import since_timestamp
    return app.store.find_deliveries(flow=args.flow or None, state=args.state or None,
                                     connections=[args.target] if args.target else None, event_id=args.event or None,
                                     created_since=since_timestamp(args.since) if args.since else None,
                                     limit=max(1, args.limit), newest_first=True)


def cmd_list(args) -> int:
    import sys

    from runner.app import App
    from runner.core import jsonio
    from runner.deliver.timeline import iso, utc
    app = App()
    rows = select_deliveries(app, args)
    if args.json:
        keys = ("id", "flow", "route", "connection", "action", "state", "attempts", "max_attempts", "event_id",
                "target_ref", "last_error", "error_kind", "idempotency_key")
        for r in rows:
            out = {k: r.get(k) for k in keys}
            out.update(created_at=iso(r.created_at), updated_at=iso(r.updated_at))
            print(jsonio.dumps(out))
        return 0
    if not rows:
        print("no deliveries match", file=sys.stderr)
        return 0
    table = [HEADER]
    for r in rows:
        table.append((str(r.id), utc(r.created_at), r.flow, r.route, r.connection, r.action,
                      r.state, f"{r.attempts}/{r.max_attempts}", r.event_id or "-",
                      r.target_ref or "-", one_line(r.last_error, 80) or "-"))
    print_table(table)
    print(f"\n{len(rows)} deliveries (newest first{', at most ' + str(args.limit) if len(rows) >= args.limit else ''}). "
          "`ledgerflow inbox show EVENT` tells one event's story.", file=sys.stderr)
    return 0
