"""A project with Stripe endpoints, and requests signed the way Stripe signs them."""

from __future__ import annotations

import time
from pathlib import Path

from runner.core import jsonio
from runner.ingest.webhooks import sign

from .helpers_project import PROJECT, make_project

# test-only signing secrets (never real ones): platform (new + old, rotating) and Connect
SECRETS = {"LF_TEST_WHSEC_NEW": "whsec_test_platform_new_0123456789",
           "LF_TEST_WHSEC_OLD": "whsec_test_platform_old_0123456789",
           "LF_TEST_WHSEC_CONNECT": "whsec_test_connect_0123456789"}
NEW, OLD, CONNECT = SECRETS["LF_TEST_WHSEC_NEW"], SECRETS["LF_TEST_WHSEC_OLD"], SECRETS["LF_TEST_WHSEC_CONNECT"]

STRIPE_SECTION = """\
stripe:
  api_key: {env: LF_TEST_STRIPE_KEY}
  endpoints:
    platform:
      path: /webhooks/stripe
      secrets: [{env: LF_TEST_WHSEC_NEW}, {env: LF_TEST_WHSEC_OLD}]
    connect:
      path: /webhooks/stripe/connect
      secrets: [{env: LF_TEST_WHSEC_CONNECT}]
      tolerance: 60
"""


def stripe_project(root: Path, store_url: str, *, extra: str = "", project: str = PROJECT) -> Path:
    text = project.replace("settings:\n", f"settings:\n  store_url: {store_url}\n", 1) + STRIPE_SECTION + extra
    return make_project(root, text)


def set_secrets(monkeypatch) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)


def signed(event_or_body, secret: str = NEW, *, t: int | None = None) -> tuple[bytes, dict]:
    """(body, headers) for a POST as Stripe sends it."""
    body = event_or_body if isinstance(event_or_body, str) else jsonio.dumps(event_or_body)
    header = sign(body, secret, int(time.time()) if t is None else t)
    return body.encode(), {"Stripe-Signature": header, "Content-Type": "application/json; charset=utf-8"}
