"""stripe catch-up, stripe dispatch."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stripe", help="Stripe source: catch up on missed events, dispatch the inbox")
    ssub = p.add_subparsers(dest="stripe_command", metavar="SUBCOMMAND")
    q = ssub.add_parser("catch-up", help="fetch events from Stripe's Events API that the inbox lacks")
    q.add_argument("--since", required=True, help="date (2026-11-01), ISO date-time or unix time; Stripe keeps 30 days")
    q.add_argument("--until", help="end of the window (default: now)")
    q.add_argument("--account", action="append", dest="accounts", metavar="ACCT",
                   help="connected account(s) to include (default: stripe.connected_accounts)")
    q.set_defaults(func=cmd_catch_up)
    q = ssub.add_parser("dispatch", help="plan pending inbox events with the matching flows (writes delivery rows)")
    q.add_argument("--limit", type=int, default=500)
    q.add_argument("--retry-failed", action="store_true", help="also re-plan events that failed to plan")
    q.set_defaults(func=cmd_dispatch)


def cmd_catch_up(args) -> int:
    from runner.app import App
    from runner.ingest.catchup import catch_up
    summary = catch_up(App(), args.since, args.until, accounts=args.accounts)
    for line in summary.lines():
        print(line)
    print(f"{summary.inserted} event(s) added to the inbox")
    return 0 if summary.ok else 1


def cmd_dispatch(args) -> int:
    from runner.app import App
    from runner.ingest.dispatch import dispatch_pending
    statuses = ("pending", "failed") if args.retry_failed else ("pending",)
    s = dispatch_pending(App(), args.limit, statuses=statuses)
    print(s.line())
    for event_id, error in s.errors.items():
        print(f"{event_id}: {error}")
    return 1 if s.failed else 0
