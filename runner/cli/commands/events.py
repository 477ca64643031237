"""events from-fixture: build a Stripe event from Stripe's example objects."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("events", help="build Stripe events for previews and tests")
    esub = p.add_subparsers(dest="events_command", metavar="SUBCOMMAND")
    q = esub.add_parser("from-fixture", help="wrap a Stripe example object (fixtures3.json) as an event")
    q.add_argument("type", help="event type, e.g. charge.succeeded")
    q.add_argument("--resource", help="example object to use (default: from the event type)")
    q.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the object (dotted path; JSON values)")
    q.add_argument("--account", help="Connect account id (acct_...)")
    q.add_argument("--fixtures", help="path to fixtures3.json (default ../shared/reference/stripe/fixtures3.json)")
    q.set_defaults(func=cmd_from_fixture)


def cmd_from_fixture(args) -> int:
    import os

    from runner.core import jsonio
    from runner.core.errors import LedgerflowError
    from runner.language.fixtures import event_from_fixture
    if args.fixtures:
        os.environ["LEDGERFLOW_STRIPE_FIXTURES"] = args.fixtures
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise LedgerflowError(f"--set {item!r}: expected FIELD=VALUE")
        k, v = item.split("=", 1)
        overrides[k] = v
    print(jsonio.dumps(event_from_fixture(args.type, resource=args.resource, overrides=overrides,
                                          account=args.account), indent=2))
    return 0
