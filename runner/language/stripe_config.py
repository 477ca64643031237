"""The ``stripe:`` section of ledgerflow.yaml, read into typed settings.

```yaml
stripe:
  api_key: {env: STRIPE_API_KEY}          # for catch-up (Events API)
  api_base: https://api.stripe.com        # tests point this at a stand-in
  max_body_bytes: 1048576                 # larger webhook bodies get 413
  endpoints:                              # one path per Stripe webhook endpoint
    platform: {path: /webhooks/stripe, secrets: [{env: STRIPE_WEBHOOK_SECRET}]}
    connect:  {path: /webhooks/stripe/connect, tolerance: 300, future_tolerance: 300,
               secrets: [{env: STRIPE_CONNECT_WEBHOOK_SECRET}, {env: STRIPE_CONNECT_WEBHOOK_SECRET_OLD}]}
  connected_accounts: [acct_1Nv0FGQ9RKHgCVdK]
  catch_up: {interval: 1h, lookback: 3d}
```

Secrets stay references until ``resolve_secrets`` is called at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from runner.core.durations import parse_duration
from runner.core.errors import LedgerflowError

DEFAULT_PATH = "/webhooks/stripe"
DEFAULT_TOLERANCE = 300
DEFAULT_FUTURE_TOLERANCE = 300      # seconds a signature's timestamp may be ahead of our clock
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_SECRET_REF = {"env": "STRIPE_WEBHOOK_SECRET"}


@dataclass
class Endpoint:
    name: str
    path: str
    secret_refs: list[dict]
    tolerance: int = DEFAULT_TOLERANCE
    future_tolerance: int = DEFAULT_FUTURE_TOLERANCE
    secrets: list[str] = field(default_factory=list)   # filled by resolve_secrets

    @property
    def source(self) -> str:
        return f"webhook:{self.name}"[:32]


@dataclass
class StripeSettings:
    endpoints: list[Endpoint]
    api_key_ref: dict | None = None
    api_base: str | None = None
    connected_accounts: list[str] = field(default_factory=list)
    max_body_bytes: int = DEFAULT_MAX_BODY
    catch_up_interval: float = 3600.0
    catch_up_lookback: float = 3 * 86400.0
    max_network_retries: int = 2

    def resolve_secrets(self, resolver) -> None:
        """Turn every endpoint's secret references into values (raises naming the field)."""
        for ep in self.endpoints:
            ep.secrets = [resolver.resolve(ref, f"stripe.endpoints.{ep.name}.secrets[{i}]")
                          for i, ref in enumerate(ep.secret_refs)]

    def routes(self) -> dict[str, list[Endpoint]]:
        """Path -> endpoints served there. ``/webhooks/stripe`` is always served: by the
        endpoint that claims it, else by every configured endpoint (any of their secrets)."""
        by_path: dict[str, list[Endpoint]] = {}
        for ep in self.endpoints:
            by_path.setdefault(ep.path, []).append(ep)
        if DEFAULT_PATH not in by_path:
            by_path[DEFAULT_PATH] = list(self.endpoints)
        return by_path


def stripe_settings(raw: Mapping[str, Any] | None, file: str = "ledgerflow.yaml") -> StripeSettings:
    """Settings from the (schema-checked) ``stripe:`` mapping; defaults when absent."""
    raw = raw or {}
    endpoints = []
    for name, cfg in (raw.get("endpoints") or {}).items():
        cfg = cfg or {}
        endpoints.append(Endpoint(name=name, path=cfg.get("path") or f"{DEFAULT_PATH}/{name}",
                                  secret_refs=list(cfg.get("secrets") or []),
                                  tolerance=int(cfg.get("tolerance", DEFAULT_TOLERANCE)),
                                  future_tolerance=int(cfg.get("future_tolerance", DEFAULT_FUTURE_TOLERANCE))))
    if not endpoints:
        endpoints = [Endpoint("stripe", DEFAULT_PATH, [DEFAULT_SECRET_REF])]
    for ep in endpoints:
        if not ep.secret_refs:
            raise LedgerflowError(f"{file}: stripe.endpoints.{ep.name}.secrets: expected at least one "
                                  "signing secret reference ({env: NAME} or {prefect_secret: block})")
    cu = raw.get("catch_up") or {}
    try:
        interval = _seconds(cu.get("interval", "1h"))
        lookback = _seconds(cu.get("lookback", "3d"))
    except ValueError as exc:
        raise LedgerflowError(f"{file}: stripe.catch_up: {exc}") from None
    return StripeSettings(endpoints=endpoints, api_key_ref=raw.get("api_key"), api_base=raw.get("api_base"),
                          connected_accounts=list(raw.get("connected_accounts") or []),
                          max_body_bytes=int(raw.get("max_body_bytes", DEFAULT_MAX_BODY)),
                          catch_up_interval=interval, catch_up_lookback=lookback,
                          max_network_retries=int(raw.get("max_network_retries", 2)))


def _seconds(text: str) -> float:
    """A duration like 90s, 15m, 1h or 3d."""
    text = str(text)
    return int(text[:-1]) * 86400.0 if text.endswith("d") and text[:-1].isdigit() else parse_duration(text)
