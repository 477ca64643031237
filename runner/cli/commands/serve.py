"""serve: the webhook receiver, the dispatcher and every plugged-in service."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="receive Stripe webhooks and run the background services (dispatch, "
                                     "catch-up, delivery...)")
    p.add_argument("--host", help="address to listen on (default: serve.host or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port or 8000); the Web Connector listens on "
                                            "serve.qbwc.host:port when that is set")
    p.add_argument("--no-background", action="store_true",
                   help="only receive webhooks into the inbox; start no background service")
    p.add_argument("--workers", type=_positive, default=1,
                   help="receiver processes sharing the port (default 1); the background services and the Web "
                        "Connector's own listener run in the first one only. Use a PostgreSQL store for more than "
                        "one (SQLite works, but takes one commit at a time)")
    p.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)       # a receiver started by --workers
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"--workers must be 1 or more, got {n}")
    return n


def cmd_serve(args) -> int:
    import asyncio
    import logging
    import sys

    from runner.app import App
    from runner.operate.server.listeners import build_servers, serve_all

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))  # no line per API call
    # the inbox writer thread takes the GIL back as soon as its commit returns (group-commit latency)
    sys.setswitchinterval(0.001)
    # the project file only: a broken one (no endpoints or secrets: nothing can be received) stops start-up;
    # the flows load after the port is open (runner.operate.server.supervisor), a broken one loud but not fatal
    app = App()
    serve = app.project.raw.get("serve") or {}
    host = args.host or serve.get("host", "127.0.0.1")
    port = args.port or int(serve.get("port", 8000))
    if args.worker_fd is not None or args.workers > 1:
        from runner.operate.server import workers
        if args.worker_fd is not None:
            return workers.serve_child(app, host, port, args.worker_fd, args.worker_index, args.workers,
                                       log_level=args.log_level)
        return workers.supervise(app, host, port, args.workers, background=not args.no_background,
                                 log_level=args.log_level)
    servers = build_servers(app, host, port, background=not args.no_background, log_level=args.log_level)
    try:
        asyncio.run(serve_all(servers))
    except KeyboardInterrupt:
        pass
    return 0
