"""What a scheduled (or hand-started) ledgerflow deployment runs.

One generic Prefect flow, ``scheduled_run``, takes the flow file as a
parameter, so every scheduled flow is a deployment of the same entrypoint
(``runner.operate.scheduled:scheduled_run``). ``since``/``until`` (dates or
timestamps) let a run be started by hand from the Prefect UI for a range.

* A flow with a ``reconcile:`` section runs the payout reconciliation
  (``runner.reconcile.run_from_flow``).
* Any other flow runs the documented default: a Stripe catch-up for
  [since, until] (or since the last pass, without ``since``) when the project
  has a ``stripe:`` section, then dispatch of pending events, then delivery
  of everything due, each batch in its own (nested) flow run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from runner.deliver.prefect_flows import _alert_failed_run, _app
from runner.reconcile.trigger import exceptions_state, reconcile_outcome


def run_scheduled(app, flow_, params: dict[str, Any]) -> dict[str, Any]:
    """Plain function behind the Prefect flow (tested without the engine)."""
    params = {k: v for k, v in params.items() if v is not None}
    if flow_.raw.get("reconcile") is not None:
        from runner import reconcile  # the reconciliation engine, loaded only when needed
        report = reconcile.run_from_flow(app, flow_, params)
        return {"kind": "reconcile", "flow": flow_.name, **reconcile_outcome(report)}
    out: dict[str, Any] = {"kind": "deliver", "flow": flow_.name}
    if app.project.raw.get("stripe"):
        from runner.ingest import catchup
        summary = (catchup.catch_up(app, params["since"], params.get("until")) if params.get("since")
                   else catchup.scheduled_pass(app))
        out["catch_up"] = summary.lines()
    from runner.deliver.worker import DeliveryLoop, LoopSettings
    from runner.ingest.dispatch import dispatch_pending
    out["dispatched"] = dispatch_pending(app, 10_000).dispatched
    loop = DeliveryLoop(app, LoopSettings(batch_size=int(app.project.settings.get("batch_size", 100))))
    loop.run(until_idle=True)
    out["batches"], out["delivered"] = loop.batches, loop.delivered
    return out


@flow(name="ledgerflow-scheduled", persist_result=False, log_prints=True,
      on_failure=[_alert_failed_run], on_crashed=[_alert_failed_run])
def scheduled_run(flow_file: str, since: str | None = None, until: str | None = None,
                  project_file: str | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one ledgerflow flow on its schedule, or by hand for a date range (since/until: YYYY-MM-DD)."""
    app = _app(project_file)
    flow_ = app.flow(flow_file)
    out = run_scheduled(app, flow_, {**(params or {}), "since": since, "until": until})
    return exceptions_state(out) or out
