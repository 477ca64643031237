"""worker: the delivery loop, with the dispatcher beside it as a service of its own (run
several on PostgreSQL to share the load: neither plans nor sends anything twice)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="deliver due operations in batches, each batch in a Prefect flow run "
                                      "(run several against PostgreSQL; they never send the same operation twice)")
    p.add_argument("--batch-size", type=int, help="deliveries per batch / flow run (default: settings.batch_size)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds to wait when nothing is due (default 0.5)")
    p.add_argument("--lease", type=float, default=300.0,
                   help="seconds a claim holds; a worker that dies releases its claims after this (default 300)")
    p.add_argument("--no-dispatch", action="store_true",
                   help="only deliver; do not run the dispatcher (which plans pending inbox events)")
    p.add_argument("--max-batch-size", type=int, default=0,
                   help="a deep queue doubles the batch up to this (default: 10 x --batch-size)")
    p.add_argument("--until-idle", action="store_true",
                   help="exit when nothing is due (status 1 if deliveries are still due, e.g. the Prefect API "
                        "kept failing)")
    p.add_argument("--give-up-after", type=int, default=6,
                   help="with --until-idle: consecutive failed batches (retried with backoff) before the worker "
                        "stops (default 6)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_worker)


def cmd_worker(args) -> int:
    import logging
    import signal
    import threading

    from runner.app import App
    from runner.core.errors import LedgerflowError
    from runner.deliver.worker import DeliveryLoop, LoopSettings
    from runner.ingest.dispatch import DispatchService
    from runner.operate.prefect_server import use_project_api

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = App()
    if args.batch_size is not None and args.batch_size < 1:
        raise LedgerflowError(f"--batch-size: expected a positive number, got {args.batch_size}")
    if args.lease <= 0:
        raise LedgerflowError(f"--lease: expected a positive number of seconds, got {args.lease}")
    if args.give_up_after < 1:
        raise LedgerflowError(f"--give-up-after: expected a positive number of batches, got {args.give_up_after}")
    use_project_api(app)          # PREFECT_API_URL, else the project's server (started if need be; see prefect_server)
    from runner.deliver.limits import ensure_limits
    ensure_limits(app)
    settings = LoopSettings(batch_size=args.batch_size or int(app.project.settings.get("batch_size", 100)),
                            poll_interval=args.poll, lease=args.lease, max_batch=args.max_batch_size,
                            give_up_after=args.give_up_after)
    loop = DeliveryLoop(app, settings)
    dispatcher = None if args.no_dispatch else DispatchService(app, interval=args.poll)
    stopping = threading.Event()

    def on_term(*_) -> None:
        stopping.set()
        loop.request_stop()
    signal.signal(signal.SIGTERM, on_term)
    log = logging.getLogger("ledgerflow.worker")
    log.info("worker %s: batches of %d, lease %.0fs, store %s, dispatcher %s", loop.worker, settings.batch_size,
             settings.lease, app.store.dialect, "off" if dispatcher is None else "on")
    from runner.operate.reload import background as config_watcher
    watcher = config_watcher(app, process="worker")     # hot reload of flows, mappings, ledgerflow.yaml
    watcher.start()
    status = 0
    try:
        if args.until_idle:
            _until_idle(app, loop, dispatcher is not None, stopping)
            status = _left_due(loop, log)
        else:
            if dispatcher is not None:
                dispatcher.start()          # plans while the loop's lanes deliver, never between batches
            loop.run()
    finally:
        watcher.stop()
        if dispatcher is not None:
            dispatcher.stop()
        log.info("worker %s stopping: %d batches, %d delivered", loop.worker, loop.batches, loop.delivered)
        app.close()
    return status


def _left_due(loop, log) -> int:
    """``--until-idle``'s exit status: 1 while deliveries are still due (nothing is lost: they wait)."""
    due = loop.remaining()
    if not due:
        return 0
    log.error("%d deliveries are still due%s; they wait in the store for the next worker", due,
              f" (the last batch failed: {loop.last_error})" if loop.last_error else "")
    return 1


def _until_idle(app, loop, dispatch: bool, stopping) -> None:
    """Plan everything pending, deliver until nothing is due; again if events arrived meanwhile."""
    from runner.ingest.dispatch import dispatch_pending
    while True:
        while dispatch and dispatch_pending(app, 5000).events:
            pass
        loop.run(until_idle=True)
        if not dispatch or stopping.is_set() or loop.gave_up or not app.store.count_events("pending"):
            return
