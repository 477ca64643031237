"""``ledgerflow connect <system>``: the OAuth 2 authorization-code flow for a connection.

Prints the authorization URL, takes the redirect on localhost, exchanges the
code and stores the tokens encrypted (LEDGERFLOW_TOKEN_KEY). To add a system,
add a ``Provider`` to ``PROVIDERS``: its connector type, a ``module:function``
building the ``OAuthConfig`` from (name, connection config, secrets), and the
redirect parameters to keep with the tokens.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Provider:
    connector_type: str
    oauth_config: str                                   # "module:function(name, cfg, secrets) -> OAuthConfig"
    keep_from_redirect: dict[str, str] = field(default_factory=dict)   # redirect param -> token extra key
    after: str | None = None                            # optional "module:function(name, cfg, tokens) -> str"


PROVIDERS: dict[str, Provider] = {
    "quickbooks-online": Provider("quickbooks_online", "connectors.quickbooks_online.connector:oauth_config",
                                  {"realmId": "realm_id"}),
    "sage": Provider("sage", "connectors.sage.connector:oauth_config", {"country": "country"},
                     after="connectors.sage.business:choose_business"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("connect", help="authorize ledgerflow with an accounting system (OAuth 2) and store the tokens")
    p.add_argument("system", choices=sorted(PROVIDERS), help="the system to connect")
    p.add_argument("--connection", help="connection name in ledgerflow.yaml (default: the only one of that type)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the browser's redirect")
    p.set_defaults(func=cmd_connect)


def _load(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def pick_connection(connections: dict, connector_type: str, wanted: str | None, project_file: str) -> str:
    of_type = sorted(n for n, c in connections.items() if c.get("type") == connector_type)
    if wanted:
        if wanted not in connections:
            raise_error(f"--connection {wanted!r}: no such connection in {project_file} "
                        f"(connections of type {connector_type}: {', '.join(of_type) or 'none'})")
        if connections[wanted].get("type") != connector_type:
            raise_error(f"--connection {wanted!r} has type {connections[wanted].get('type')!r}, "
                        f"expected {connector_type}")
        return wanted
    if len(of_type) != 1:
        raise_error(f"{project_file}: expected exactly one connection of type {connector_type} "
                    f"(found: {', '.join(of_type) or 'none'}); name one with --connection")
    return of_type[0]


def raise_error(message: str):
    from ..errors import LedgerflowError
    raise LedgerflowError(message)


def cmd_connect(args) -> int:
    from connectors.oauth import authorize_interactively

    from ..app import App
    provider = PROVIDERS[args.system]
    app = App()
    name = pick_connection(app.project.connections, provider.connector_type, args.connection, app.project.file)
    cfg = app.project.connections[name]
    config = _load(provider.oauth_config)(name, cfg, app.secrets)
    tokens = authorize_interactively(name, config, app.store, timeout=args.timeout,
                                     extra_from_redirect=provider.keep_from_redirect,
                                     show=lambda text: print(text, flush=True))
    app.store.audit("connect", name, f"{args.system} connected")
    detail = _load(provider.after)(name, cfg, tokens) if provider.after else \
        ", ".join(f"{k}={v}" for k, v in tokens.extra.items())
    print(f"connected {name} ({args.system})" + (f": {detail}" if detail else "") + "; tokens stored encrypted")
    return 0
