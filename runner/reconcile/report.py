"""Presenting a reconciliation run: table rows, a markdown list of exceptions with
their fixes, Prefect artifacts, a rich table for the terminal, a Slack summary."""

from __future__ import annotations

from collections import Counter
from typing import Any

from runner.reconcile.classify import EXCEPTIONS, UNBALANCED
from runner.reconcile.engine import RunReport

KINDS = (*EXCEPTIONS, UNBALANCED)


def table_rows(report: RunReport) -> list[dict[str, Any]]:
    rows = []
    for r in report.results:
        row = {"payout": r.payout_id, "account": r.account or "platform", "arrival": r.arrival, "status": r.status,
               "amount": f"{r.amount_major} {r.currency}",
               "home": f"{r.home_amount} {r.home_currency}" if r.home_amount is not None else "-",
               "transactions": r.transactions, "reconciled": r.reconciled}
        kinds = Counter(c.kind for c in r.exceptions)
        row.update({k: kinds.get(k, 0) for k in KINDS})
        rows.append(row)
    return rows


def headline(report: RunReport) -> str:
    statuses = Counter(r.status for r in report.results)
    parts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    return (f"{len(report.results)} payouts ({parts or 'none'}); {report.transactions} transactions, "
            f"{report.reconciled_share}% reconciled automatically; {len(report.exceptions)} exceptions")


def markdown(report: RunReport) -> str:
    out = [f"# Payout reconciliation {report.run_id}", "", headline(report), ""]
    notes = [r for r in report.results if r.reason]
    if notes:
        out += ["## Payouts needing a note", ""]
        out += [f"- **{r.payout_id}** ({r.account or 'platform'}, {r.amount_major} {r.currency}): {r.status} — "
                f"{r.reason}" for r in notes]
        out.append("")
    if not report.exceptions:
        out.append("No exceptions: every transaction of every payout reconciled.")
        return "\n".join(out) + "\n"
    out += ["## Exceptions", "", "| payout | transaction | category | class | detail | fix |",
            "|---|---|---|---|---|---|"]
    for r, c in report.exceptions:
        cells = [r.payout_id, c.txn_id, c.category, c.kind, c.detail, f"`{c.fix}`" if c.fix.startswith("ledgerflow")
                 else c.fix]
        out.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join(out) + "\n"


def create_artifacts(report: RunReport, key: str = "payout-reconciliation") -> None:
    """A table artifact (payouts x status) and a markdown artifact (exceptions and fixes)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    create_table_artifact(table=table_rows(report), key=key, description=headline(report))
    create_markdown_artifact(markdown=markdown(report), key=f"{key}-exceptions",
                             description=f"{len(report.exceptions)} exceptions with their fixes")


def rich_table(report: RunReport):
    from rich.table import Table
    t = Table(title="Payout reconciliation", caption=headline(report))
    rows = table_rows(report)
    cols = ["payout", "account", "arrival", "status", "amount", "home", "transactions", "reconciled", *KINDS]
    for c in cols:
        t.add_column(c.replace("_", " "), justify="right" if c in ("amount", "home", "transactions", "reconciled")
                     or c in KINDS else "left")
    for row in rows:
        style = {"reconciled": "green", "exceptions": "yellow", "unbalanced": "red"}.get(row["status"])
        t.add_row(*[str(row[c]) for c in cols], style=style)
    return t


def slack_summary(app, report: RunReport, flow_name: str) -> bool:
    """One Slack message when there are exceptions (through runner.deliver.alerts, when present)."""
    if not report.exceptions:
        return False
    try:
        from runner.core.slack import channel_for as _channel_for
        from runner.core.slack import post_message, slack_config
    except ImportError:
        return False
    if slack_config(app) is None:
        return False
    kinds = Counter(c.kind for _, c in report.exceptions)
    text = (f":warning: Payout reconciliation: {headline(report)}. "
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))
            + ". See the run's exceptions artifact, or `ledgerflow reconcile payouts`.")
    return post_message(app, text, None, channel=_channel_for(app, flow_name))
