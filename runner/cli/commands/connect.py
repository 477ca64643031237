"""``ledgerflow connect <system>``: the OAuth 2 authorization-code flow for a connection.

Prints the authorization URL, takes the redirect on localhost, exchanges the
code and stores the tokens encrypted (LEDGERFLOW_TOKEN_KEY). The systems are
the connectors' own declarations (``ConnectorSpec.oauth``, an ``OAuthProvider``:
a ``module:function`` building the ``OAuthConfig`` from (name, connection
config, secrets), and the redirect parameters to keep with the tokens), so a
connector package adds one without editing this module.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("connect", help="authorize ledgerflow with an accounting system (OAuth 2) and store the tokens")
    # the systems come from the connectors (checked when the command runs, so --help stays light)
    p.add_argument("system", help="the system to connect, e.g. quickbooks-online or sage")
    p.add_argument("--connection", help="connection name in ledgerflow.yaml (default: the only one of that type)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the browser's redirect")
    p.set_defaults(func=cmd_connect)


def provider_for(system: str):
    """(connector type, OAuthProvider) of a ``ledgerflow connect`` system."""
    import difflib

    from connectors import registry
    providers = registry.oauth_providers()
    if system not in providers:
        close = difflib.get_close_matches(system, list(providers), n=1)
        raise_error(f"no connector offers `ledgerflow connect {system}`"
                    + (f": did you mean `{close[0]}`?" if close else "")
                    + f" (systems: {', '.join(sorted(providers)) or 'none'})")
    return providers[system]


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
    from runner.core.errors import LedgerflowError
    raise LedgerflowError(message)


def cmd_connect(args) -> int:
    from connectors.contract import load
    from connectors.oauth import authorize_interactively
    from runner.app import App
    from runner.connector_runtime import runtime_for
    connector_type, provider = provider_for(args.system)
    app = App()
    name = pick_connection(app.project.connections, connector_type, args.connection, app.project.file)
    cfg = app.project.connections[name]
    config = load(provider.oauth_config)(name, cfg, app.secrets)
    runtime = runtime_for(app)
    tokens = authorize_interactively(name, config, runtime.tokens, timeout=args.timeout,
                                     extra_from_redirect=provider.keep_from_redirect,
                                     show=lambda text: print(text, flush=True))
    app.store.audit("connect", name, f"{args.system} connected")
    detail = load(provider.after)(name, cfg, tokens, runtime) if provider.after else \
        ", ".join(f"{k}={v}" for k, v in tokens.extra.items())
    print(f"connected {name} ({args.system})" + (f": {detail}" if detail else "") + "; tokens stored encrypted")
    return 0
