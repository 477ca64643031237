"""qbwc: the QuickBooks Web Connector side (the .qwc file)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qbwc", help="QuickBooks Desktop through the Web Connector")
    qsub = p.add_subparsers(dest="qbwc_command", metavar="SUBCOMMAND")
    q = qsub.add_parser("qwc", help="print the .qwc file to load into the QuickBooks Web Connector")
    q.add_argument("--url", required=True, help="where the Web Connector reaches `ledgerflow serve`, "
                                                 "e.g. https://HOST/qbwc")
    q.add_argument("--user", required=True, help="the username of a quickbooks_desktop connection")
    q.add_argument("--minutes", type=int, default=None, help="poll interval (default: the connection's "
                                                            "poll_minutes, or 5)")
    q.add_argument("--name", default="ledgerflow", help="AppName shown in the Web Connector")
    q.set_defaults(func=cmd_qwc)


def cmd_qwc(args) -> int:
    from connectors.quickbooks_desktop.qwc import build_qwc, stable_guid
    from connectors.quickbooks_desktop.webconnector import connections_of
    from runner.app import App
    from runner.core.errors import LedgerflowError

    app = App()
    try:
        conns = connections_of(app.project.connections)
    except ValueError as exc:
        raise LedgerflowError(f"{app.project.file}: {exc}") from None
    conn = next((c for c in conns if c.username == args.user), None)
    if conn is None:
        known = ", ".join(f"{c.name} (user {c.username})" for c in conns) or "none"
        raise LedgerflowError(f"--user {args.user!r}: no quickbooks_desktop connection in {app.project.file} has "
                              f"that username (connections: {known})")
    from runner.connector_runtime import runtime_for
    cache = runtime_for(app).cache
    text = build_qwc(url=args.url, username=args.user, app_name=args.name,
                     minutes=conn.poll_minutes if args.minutes is None else args.minutes,
                     owner_id=stable_guid(cache, "owner_id"), file_id=stable_guid(cache, f"file_id:{conn.name}"))
    sys.stdout.write(text)
    return 0
