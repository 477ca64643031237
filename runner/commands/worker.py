"""worker: the delivery loop on its own (run several on PostgreSQL to share the load)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="deliver due operations in batches, each batch in a Prefect flow run "
                                      "(run several against PostgreSQL; they never send the same operation twice)")
    p.add_argument("--batch-size", type=int, help="deliveries per batch / flow run (default: settings.batch_size)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds to wait when nothing is due (default 0.5)")
    p.add_argument("--lease", type=float, default=300.0,
                   help="seconds a claim holds; a worker that dies releases its claims after this (default 300)")
    p.add_argument("--no-dispatch", action="store_true", help="only deliver; do not plan pending inbox events")
    p.add_argument("--until-idle", action="store_true", help="exit when nothing is due")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_worker)


def cmd_worker(args) -> int:
    import logging
    import signal

    from ..app import App
    from ..errors import LedgerflowError
    from ..prefect_server import adopt_running
    from ..worker import DeliveryLoop, LoopSettings

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = App()
    if args.batch_size is not None and args.batch_size < 1:
        raise LedgerflowError(f"--batch-size: expected a positive number, got {args.batch_size}")
    if args.lease <= 0:
        raise LedgerflowError(f"--lease: expected a positive number of seconds, got {args.lease}")
    adopt_running(app)            # the embedded server of a running `ledgerflow serve`, if any
    from ..limits import ensure_limits
    ensure_limits(app)
    settings = LoopSettings(batch_size=args.batch_size or int(app.project.settings.get("batch_size", 100)),
                            poll_interval=args.poll, lease=args.lease)
    loop = DeliveryLoop(app, settings, dispatch=not args.no_dispatch)
    signal.signal(signal.SIGTERM, lambda *_: loop.request_stop())
    log = logging.getLogger("ledgerflow.worker")
    log.info("worker %s: batches of %d, lease %.0fs, store %s", loop.worker, settings.batch_size, settings.lease,
             app.store.dialect)
    try:
        loop.run(until_idle=args.until_idle)
    finally:
        log.info("worker %s stopping: %d batches, %d delivered", loop.worker, loop.batches, loop.delivered)
        app.close()
    return 0
