"""The stripe: section of ledgerflow.yaml: mistakes are named with file:line:col."""

from __future__ import annotations

import pytest

from runner.app import App
from runner.core.errors import LedgerflowError, SpecError
from runner.language.spec import load_project
from runner.language.stripe_config import stripe_settings
from runner.operate.server import build_asgi
from tests.helpers_project import PROJECT, make_project


def project_with(tmp_path, stripe_yaml: str):
    return make_project(tmp_path, PROJECT + stripe_yaml)


@pytest.mark.parametrize("stripe_yaml, expected", [
    ("stripe:\n  endpoints:\n    platform: {path: /webhooks/stripe}\n",
     "ledgerflow.yaml:13:15: stripe.endpoints.platform: 'secrets' is a required property"),
    ("stripe:\n  endpoints:\n    platform:\n      secrets: [whsec_abcdefghijklmnop]\n",
     "stripe.endpoints.platform.secrets[0]: looks like a literal secret (whsec_...)"),
    ("stripe:\n  endpoints:\n    platform: {secrets: [{env: X}], tolerance: 5m}\n",
     "stripe.endpoints.platform.tolerance: '5m' is not of type 'integer'"),
    ("stripe:\n  endpoints:\n    platform: {secrets: [{env: X}], path: webhooks}\n",
     "stripe.endpoints.platform.path: 'webhooks' does not match"),
    ("stripe:\n  max_body_bytes: 10\n", "stripe.max_body_bytes: 10 is less than the minimum of 1024"),
    ("stripe:\n  connected_accounts: [ca_123]\n", "stripe.connected_accounts[0]: 'ca_123' does not match"),
    ("stripe:\n  endpoint: {}\n", "unknown key 'endpoint' in stripe (expected one of: api_base, api_key, catch_up"),
])
def test_bad_stripe_section_is_named(tmp_path, stripe_yaml, expected):
    with pytest.raises(SpecError) as err:
        load_project(project_with(tmp_path, stripe_yaml))
    assert expected in str(err.value)


def test_missing_signing_secret_stops_serve_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.delenv("LF_MISSING_WHSEC", raising=False)
    path = project_with(tmp_path, "stripe:\n  endpoints:\n    platform:\n      secrets: [{env: LF_MISSING_WHSEC}]\n")
    with pytest.raises(LedgerflowError, match=r"stripe.endpoints.platform.secrets\[0\]: environment variable "
                                              r"LF_MISSING_WHSEC is not set"):
        build_asgi(App(load_project(path)), background=False)


def test_defaults_without_a_stripe_section():
    s = stripe_settings(None)
    assert [(e.name, e.path, e.secret_refs, e.tolerance) for e in s.endpoints] == [
        ("stripe", "/webhooks/stripe", [{"env": "STRIPE_WEBHOOK_SECRET"}], 300)]
    assert (s.max_body_bytes, s.catch_up_interval, s.catch_up_lookback) == (1048576, 3600, 3 * 86400)


def test_webhooks_stripe_is_always_served():
    s = stripe_settings({"endpoints": {"a": {"secrets": [{"env": "A"}]}, "b": {"secrets": [{"env": "B"}]}}})
    routes = s.routes()
    assert set(routes) == {"/webhooks/stripe/a", "/webhooks/stripe/b", "/webhooks/stripe"}
    assert [e.name for e in routes["/webhooks/stripe"]] == ["a", "b"]
