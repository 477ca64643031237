"""Connector types by name. Action declarations load without the I/O code,
so ``ledgerflow validate`` stays fast and never imports HTTP clients."""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from .base import Action

# type -> (module with ACTIONS, "module:Class" of the connector)
TYPES: dict[str, tuple[str, str]] = {
    "csv": ("connectors.files.csv_actions", "connectors.files.csv_file:CsvConnector"),
    "iif": ("connectors.files.iif_actions", "connectors.files.iif:IifConnector"),
    "http": ("connectors.http_post.actions", "connectors.http_post.connector:HttpPostConnector"),
    "quickbooks_online": ("connectors.quickbooks_online.actions",
                          "connectors.quickbooks_online.connector:QuickBooksOnlineConnector"),
    "quickbooks_desktop": ("connectors.quickbooks_desktop.actions",
                           "connectors.quickbooks_desktop.connector:QuickBooksDesktopConnector"),
    "sage": ("connectors.sage.actions", "connectors.sage.connector:SageConnector"),
}


# Connector types the target pulls from (the QuickBooks Web Connector polls us):
# the delivery loop never pushes these; their own service claims and finishes them.
PULL_TYPES: set[str] = {"quickbooks_desktop"}


def is_pull(type_name: str) -> bool:
    return type_name in PULL_TYPES


def known_types() -> list[str]:
    return sorted(TYPES)


def actions_for(type_name: str) -> Mapping[str, Action]:
    module, _ = TYPES[type_name]
    return importlib.import_module(module).ACTIONS


def payload_check(type_name: str) -> Any:
    """The actions module's optional ``check_payload(action, payload, connection, settings) -> problems``."""
    module, _ = TYPES[type_name]
    return getattr(importlib.import_module(module), "check_payload", None)


def connector_class(type_name: str) -> Any:
    _, target = TYPES[type_name]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
