"""The ``ledgerflow`` command.

Start-up is kept light: argparse, and each sub-command imports what it needs
when it runs (``ledgerflow --help`` never imports Prefect). Feature modules
register their sub-commands through ``COMMAND_MODULES``: each module has
``register(subparsers)`` and sets ``func`` on its parsers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = [
    "runner.cli.commands.core",       # validate, preview, run
    "runner.cli.commands.inbox",      # inbox list/show (an event's story)
    "runner.cli.commands.deliveries", # deliveries list
    "runner.cli.commands.events",     # events from-fixture
    "runner.cli.commands.flowtest",   # test (flow test cases)
    "runner.cli.commands.serve",      # serve (webhooks, dispatcher, background services)
    "runner.cli.commands.stripe",     # stripe catch-up, stripe dispatch
    "runner.cli.commands.qbwc",       # qbwc qwc (QuickBooks Web Connector)
    "runner.cli.commands.worker",     # worker (the delivery loop on its own)
    "runner.cli.commands.dlq",        # dlq list/show/replay/discard
    "runner.cli.commands.deploy",     # deploy (scheduled flows -> Prefect deployments)
    "runner.cli.commands.connect",    # connect quickbooks-online (OAuth 2)
    "runner.cli.commands.reconcile",  # reconcile payouts
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledgerflow",
        description="Self-hosted integration runner for finance data: Stripe events to QuickBooks, Sage, CSV and IIF.",
    )
    parser.add_argument("--project", metavar="FILE", help="project file (default: ledgerflow.yaml here or above)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from runner import __version__
        print(f"ledgerflow {__version__}")
        return 0
    if args.project:
        os.environ["LEDGERFLOW_PROJECT"] = os.path.abspath(args.project)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from runner.core.errors import LedgerflowError
    # never Prefect's temporary server on a random port: flows run against the API that
    # runner.operate.prefect_server resolved (PREFECT_API_URL, else the project's own server)
    os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:         # `ledgerflow inbox show ... | head`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except LedgerflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
