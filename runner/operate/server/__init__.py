"""The HTTP side of ``ledgerflow serve``: the Stripe webhook receiver and the
mounts and background services other features plug in through serve_hooks."""

from runner.operate.server.asgi import build_asgi

__all__ = ["build_asgi"]
