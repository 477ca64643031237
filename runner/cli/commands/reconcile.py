"""``ledgerflow reconcile payouts``: reconcile Stripe payouts by hand, with a rich table."""

from __future__ import annotations

import argparse

DEFAULT_FLOW = "payout-reconciliation"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconcile", help="reconcile Stripe payouts against what was booked")
    rsub = p.add_subparsers(dest="reconcile_command", metavar="SUBCOMMAND")
    q = rsub.add_parser("payouts", help="prove each payout against its balance transactions, list exceptions, "
                                        "write the payout's bookings")
    q.add_argument("--since", help="first arrival date (YYYY-MM-DD); needed unless --payout is given")
    q.add_argument("--until", help="last arrival date (YYYY-MM-DD, inclusive)")
    q.add_argument("--account", help="only this connected account (acct_...) or 'platform'")
    q.add_argument("--payout", help="only this payout (po_...)")
    q.add_argument("--flow", default=DEFAULT_FLOW, help=f"reconciliation flow (default {DEFAULT_FLOW})")
    q.add_argument("--dry-run", action="store_true", help="report only; write no bookings")
    q.set_defaults(func=cmd_payouts)


def cmd_payouts(args) -> int:
    from datetime import date

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    from runner.app import App
    from runner.core.errors import LedgerflowError
    from runner.reconcile import reconcile
    from runner.reconcile.report import markdown, rich_table

    def day(value, flag):
        if value is None:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise LedgerflowError(f"{flag} {value!r}: expected a date YYYY-MM-DD") from None

    since, until = day(args.since, "--since"), day(args.until, "--until")
    if since is None and not args.payout:
        raise LedgerflowError("reconcile payouts: give --since DATE (or --payout po_...)")
    if args.account and args.account != "platform" and not args.account.startswith("acct_"):
        raise LedgerflowError(f"--account {args.account!r}: expected acct_... or platform")
    if args.payout and not args.payout.startswith("po_"):
        raise LedgerflowError(f"--payout {args.payout!r}: expected a payout id po_...")
    app = App()
    flow = app.flow(args.flow)
    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("transactions"), console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(kind, payout=None, count=0, result=None, **_):
            if kind == "payout":
                tasks[payout["id"]] = bar.add_task(f"{payout['id']}", total=None)
            elif kind == "page":
                bar.advance(tasks[payout["id"]], count)
            elif kind == "done" and result.payout_id in tasks:
                bar.update(tasks[result.payout_id], total=result.transactions, completed=result.transactions)

        report = reconcile(app, flow, since=since, until=until, account=args.account, payout=args.payout,
                           book=not args.dry_run, progress=progress)
    out = Console(width=200)
    out.print(rich_table(report))
    if report.exceptions or any(r.reason for r in report.results):
        out.print(markdown(report), markup=False, highlight=False)
    return 1 if report.exceptions else 0
