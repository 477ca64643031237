"""The connector contract: everything the runner needs to know about a connector,
declared by the connector itself (see connectors/CONTRACT.md).

A connector package exposes one ``ConnectorSpec`` through the Python entry-point
group ``ledgerflow.connectors`` (``type = "package.module:SPEC"``). The module
holding the spec must import nothing heavy: ``ledgerflow validate`` reads it for
the connection schema and the actions' payload schemas, and loads the connector
class (with its HTTP client) only when something is delivered.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from .base import Action

PUSH, PULL = "push", "pull"

# Settings the runner itself reads from every connection (runner/deliver/limits.py): allowed in any schema.
RUNNER_SETTINGS: dict[str, Any] = {
    "type": {"type": "string", "description": "The connector type (an entry point in ledgerflow.connectors)."},
    "batch_size": {"type": "integer", "minimum": 1, "description": "Operations per connector call (default 100)."},
    "rate_limit": {"type": "integer", "minimum": 1, "description": "Operations per second, for every worker."},
    "max_in_flight": {"type": "integer", "minimum": 1, "description": "Connector calls at once, every worker."},
}

SECRET_REF: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
    "description": "A secret reference: {env: NAME} or {prefect_secret: block-name}.",
    "properties": {"env": {"type": "string"}, "prefect_secret": {"type": "string"}},
}

STRING_OR_SECRET: dict[str, Any] = {"anyOf": [{"type": "string"}, SECRET_REF]}

# connectors.oauth.OAuthConfig.from_connection reads these from an OAuth connection
OAUTH_SETTINGS: dict[str, Any] = {
    "client_id": {**STRING_OR_SECRET, "description": "The app's client id (plain, or a secret reference)."},
    "client_secret": {**SECRET_REF, "description": "The app's client secret: a secret reference."},
    "token_url": {"type": "string", "description": "Token endpoint (default: the provider's)."},
    "authorize_url": {"type": "string", "description": "Authorization endpoint (default: the provider's)."},
    "redirect_uri": {"type": "string", "description": "Where `ledgerflow connect` receives the redirect."},
    "scopes": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "client_auth": {"enum": ["basic", "body"], "description": "How the client authenticates at the token endpoint."},
    "reconnect_hint": {"type": "string", "description": "What an AUTH error tells the user to do."},
}

# the currency settings the payload checks read (a connection's books may differ from settings.home_currency)
CURRENCY_SETTINGS: dict[str, Any] = {
    "multicurrency": {"type": "boolean", "description": "The books keep several currencies."},
    "home_currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "The books' home currency."},
}


def config_schema(type_name: str, properties: Mapping[str, Any], required: tuple[str, ...] = (),
                  description: str = "") -> dict[str, Any]:
    """A connection's JSON Schema: the connector's own settings plus the runner's, nothing else
    (``additionalProperties: false``, so ``enviroment:`` is an error, not a silent default).
    The ``$id`` lets ``runner.language.schemacheck`` use a validator compiled ahead of time by
    scripts/compile_schemas.py when there is a fresh one (the shipped connectors)."""
    schema: dict[str, Any] = {"$id": f"https://ledgerflow.dev/schema/connection_{type_name}.schema.json",
                              "type": "object", "additionalProperties": False, "required": ["type", *required],
                              "properties": {**RUNNER_SETTINGS, **properties}}
    if description:
        schema["description"] = description
    return schema


def with_examples(actions: Mapping[str, Action], examples: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, Action]:
    """The actions, each with its example payloads (kept beside the schemas, one list per action)."""
    return {name: replace(a, examples=tuple(examples.get(name, ()))) for name, a in actions.items()}


@dataclass(frozen=True)
class Capabilities:
    """What the runner and a reader may count on."""

    mode: str = PUSH                  # push: the delivery loop calls deliver(); pull: the target fetches (a service)
    batch_size: int = 1               # items the target takes in one request (deliver() may get more)
    idempotency: str = ""             # how a repeat is recognised, e.g. "Idempotency-Key header"
    multicurrency: bool = False       # documents in several currencies
    lookups: tuple[str, ...] = ()     # names resolved on the target (accounts, customers, tax rates, ...)


@dataclass(frozen=True)
class OAuthProvider:
    """``ledgerflow connect <system>`` for this connector: the OAuth 2 authorization-code flow."""

    system: str                                         # the command's argument, e.g. quickbooks-online
    oauth_config: str                                   # "module:function(name, cfg, secrets) -> OAuthConfig"
    keep_from_redirect: Mapping[str, str] = field(default_factory=dict)   # redirect param -> token extra key
    after: str | None = None                            # "module:function(name, cfg, tokens, runtime) -> str"


@dataclass(frozen=True)
class ConnectorSpec:
    """One connector type, as declared by its package."""

    type: str
    connector: str                                      # "module:Class" (a connectors.base.Connector)
    actions: Mapping[str, Action]
    config: Mapping[str, Any]                           # JSON Schema of a connection (see config_schema)
    capabilities: Capabilities = Capabilities()
    description: str = ""
    payload_check: Callable[..., list[str]] | None = None   # (action, payload, connection, settings) -> problems
    oauth: OAuthProvider | None = None
    store: frozenset[str] = frozenset()                 # what it keeps in the store: "cache", "tokens"
    mounts: tuple[str, ...] = ()                        # "module:function(app) -> (path prefix, ASGI app)"
    booked_amount: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # ^ reconciliation: where an action's payload keeps the booked amount, currency, rate (dotted paths)

    @property
    def is_pull(self) -> bool:
        return self.capabilities.mode == PULL

    def connector_class(self) -> Any:
        return load(self.connector)


def load(ref: str) -> Any:
    """``module:name`` -> the object."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
