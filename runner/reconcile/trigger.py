"""A payout event's reconciliation, started by the dispatcher (or by a plan row retrying it).

With a Prefect API (``PREFECT_API_URL``) it runs as a flow run of its own, named after the payout,
so it shows in the Prefect UI beside the scheduled reconciliations, with its artifacts; without
one it runs in this process. A failure raises: the caller keeps the event, writes a plan row and
the delivery loop retries it with the flow's backoff, then dead-letters and alerts.

This sits below ingest: the dispatcher calls it; it calls nothing above the reconciliation.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow

from runner.apps import app_for
from runner.core.errors import LedgerflowError

EXCEPTIONS = "Exceptions"     # the state a reconciliation with exceptions ends in (failed, not green)


def reconcile_outcome(report: Any) -> dict[str, Any]:
    """What a reconciliation's run returns: its counts (a report without them, as str)."""
    exceptions = getattr(report, "exceptions", None)
    if exceptions is None:
        return {"summary": str(report), "exceptions": 0}
    return {"transactions": report.transactions, "exceptions": len(exceptions),
            "reconciled_share": f"{report.reconciled_share}%"}


def exceptions_state(out: dict[str, Any]) -> Any:
    """A run whose reconciliation left exceptions ends Failed, named "Exceptions" (the Prefect UI shows
    it red, not a green Completed); its report (artifacts, the Slack summary) says what to fix. None
    when there were none."""
    if not out.get("exceptions"):
        return None
    from prefect.states import Failed
    return Failed(name=EXCEPTIONS, message=f"{out['exceptions']} exception(s) in {out.get('transactions', '?')} "
                                           "transaction(s): the run's artifacts and the Slack summary say what to fix",
                  data=out)


def _payout_id(event: dict) -> str:
    return str(((event.get("data") or {}).get("object") or {}).get("id") or event.get("id") or "payout")


@flow(name="ledgerflow-reconcile-payout", flow_run_name="reconcile {payout}", persist_result=False,
      log_prints=True)
def reconcile_payout_run(flow_file: str, project_file: str | None, event: dict, payout: str) -> dict[str, Any]:
    """One payout's reconciliation (the flow's ``reconcile:`` policy), its report as artifacts."""
    from runner.reconcile import run_from_flow
    app = app_for(project_file)
    out = {"kind": "reconcile", "payout": payout, **reconcile_outcome(run_from_flow(app, app.flow(flow_file),
                                                                                    {"event": event}))}
    return exceptions_state(out) or out


def reconcile_payout(app: Any, flow_: Any, event: dict) -> Any:
    """Reconcile the payout ``event`` names, with ``flow_``'s policy."""
    if os.environ.get("PREFECT_API_URL"):
        from runner.apps import register_app
        project_file = register_app(app)
        state = reconcile_payout_run(flow_file=str(flow_.path), project_file=project_file, event=event,
                                     payout=_payout_id(event), return_state=True)
        if state.is_completed() or (state.is_failed() and state.name == EXCEPTIONS):
            return state          # reconciled (its exceptions, if any, are in its report: not a failure to retry)
        # Not state.result(): called from an async flow run's thread (a plan row in a delivery batch)
        # it returns a coroutine instead of raising, and the failure would pass for a success.
        raise LedgerflowError(f"the reconciliation run of {_payout_id(event)} ended {state.type.value}"
                              f"{f' ({state.name})' if state.name else ''}: {state.message or 'no message'}")
    from runner.reconcile import run_from_flow
    return run_from_flow(app, flow_, {"event": event})
