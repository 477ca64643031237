"""The official stripe SDK's ``StripeClient``, configured from ledgerflow.yaml.

The API key comes from ``stripe.api_key`` (a secret reference); ``api_base``
moves every API call to another address (a local stand-in in tests). Calls for
a connected account pass ``options={"stripe_account": "acct_..."}``, which the
SDK sends as the ``Stripe-Account`` header.
"""

from __future__ import annotations

from typing import Any

from runner.core.errors import LedgerflowError
from runner.language.stripe_config import StripeSettings, stripe_settings


def stripe_client(app: Any, settings: StripeSettings | None = None):
    import stripe

    settings = settings or stripe_settings(app.project.raw.get("stripe"), app.project.file)
    if settings.api_key_ref is None:
        raise LedgerflowError(f"{app.project.file}: stripe.api_key: not set (expected a secret reference like "
                              "{env: STRIPE_API_KEY}); the Events API needs it")
    key = app.secrets.resolve(settings.api_key_ref, "stripe.api_key")
    base = {"api": settings.api_base.rstrip("/")} if settings.api_base else None
    return stripe.StripeClient(key, base_addresses=base, max_network_retries=settings.max_network_retries)


def retry_after(exc: Any) -> float | None:
    """Seconds a Stripe error's ``Retry-After`` header asks for (delta-seconds or an HTTP-date, read
    by connectors.http like every other target's), or None."""
    from connectors.http import retry_after_seconds
    headers = getattr(exc, "headers", None) or {}
    return retry_after_seconds(headers.get("retry-after") or headers.get("Retry-After"))
