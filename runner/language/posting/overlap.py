"""``validate``: each money movement is booked once per set of books.

Two flows that book the same movement (say ``charge.succeeded`` and
``payment_intent.succeeded`` of one payment, or a payout flow and the payout
reconciliation) into the same connection would book it twice: a validation
error naming both flows, not a surprise in the ledger. So is a flow that reads
``posting`` but is triggered by an event that is not a money movement
(``charge.refunded`` carries a cumulative amount).
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

from runner.core.errors import Problem
from runner.language.posting.events import MOVEMENTS, NOT_MOVEMENTS

RECONCILED = ("payout", "payout_reversal")     # what a payout reconciliation flow books


def _trigger_where(flow, i: int) -> tuple[int, int]:
    return flow.doc.where(("trigger", "stripe", i))


def _reconciled_targets(flow) -> dict[str, set[str]]:
    """A payout reconciliation flow: movement -> the connections it books it into. Per-transaction
    mode books the payout (and a failed payout's return) through the routes that read
    ``params.transfer``; its journal routes book only what no event books. Summary mode books every
    movement of the payout, through every route."""
    recon = (flow.raw or {}).get("reconcile") or {}
    raw_routes = (flow.raw or {}).get("routes") or []
    if recon.get("mode", "per_transaction") == "summary":
        targets = {r.target for r in flow.routes}
        return {m: targets for m in set(MOVEMENTS.values())}
    payout_targets = {r.target for r, raw in zip(flow.routes, raw_routes)
                      if "transfer" in str((raw or {}).get("when", ""))}
    return {m: payout_targets for m in RECONCILED}


def flow_movements(flow) -> dict[str, tuple[str, int]]:
    """movement -> (the trigger pattern that brings it, its index in trigger.stripe)."""
    out: dict[str, tuple[str, int]] = {}
    if (flow.raw or {}).get("reconcile") is not None:
        for m in _reconciled_targets(flow):
            out[m] = ("reconcile", -1)
        return out
    for i, pattern in enumerate(flow.stripe_types):
        for etype, movement in MOVEMENTS.items():
            if fnmatch.fnmatchcase(etype, pattern):
                out.setdefault(movement, (pattern, i))
    return out


def overlap_problems(flows: Iterable) -> list[Problem]:
    flows = sorted(flows, key=lambda f: f.file)
    problems: list[Problem] = []
    claimed: dict[tuple[str, str], object] = {}     # (movement, connection) -> the first flow
    for flow in flows:
        if flow.reads_posting:
            for i, pattern in enumerate(flow.stripe_types):
                for etype, why in NOT_MOVEMENTS.items():
                    if fnmatch.fnmatchcase(etype, pattern) and "*" not in pattern:
                        line, col = _trigger_where(flow, i)
                        problems.append(Problem(flow.file, line, col, f"trigger.stripe[{i}]: {etype} is not a money "
                                                                      f"movement, so `posting` cannot book it: {why}"))
        recon = _reconciled_targets(flow) if (flow.raw or {}).get("reconcile") is not None else None
        targets = sorted({r.target for r in flow.routes})
        for movement, (_pattern, i) in flow_movements(flow).items():
            for target in (sorted(recon[movement]) if recon is not None else targets):
                first = claimed.get((movement, target))
                if first is None:
                    claimed[(movement, target)] = flow
                    continue
                line, col = _trigger_where(flow, i) if i >= 0 else flow.doc.where(("reconcile",))
                problems.append(Problem(flow.file, line, col,
                                        f"flow {flow.name} books {movement} movements into connection {target!r}, "
                                        f"and so does flow {first.name} ({first.file}): each movement would be "
                                        f"booked twice; keep one of them (or point one at other books)"))
    return problems


def account_books_problems(project, flows: Iterable) -> list[Problem]:
    """``accounting.connect.account_books``: each connected account's books are a connection of
    their own. A connection named twice, or one the platform's flows book into, would silently
    skip movements (the planner books a movement only into its own books)."""
    books = ((project.raw.get("accounting") or {}).get("connect") or {}).get("account_books") or {}
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for account, conn in books.items():
        line, col = project.doc.where(("accounting", "connect", "account_books", account))
        if conn not in project.connections:
            problems.append(Problem(project.file, line, col, f"accounting.connect.account_books.{account}: no "
                                    f"connection named {conn!r} (known: {', '.join(sorted(project.connections))})"))
        elif conn in seen:
            problems.append(Problem(project.file, line, col, f"accounting.connect.account_books.{account}: "
                                    f"connection {conn!r} already holds {seen[conn]}'s books; each connected "
                                    "account needs books of its own"))
        seen.setdefault(conn, account)
    return problems
