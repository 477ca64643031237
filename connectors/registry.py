"""Connector types by name, found through the ``ledgerflow.connectors`` entry points.

Every connector, shipped or third-party, is a package that names its
``ConnectorSpec`` in that entry-point group (ours in pyproject.toml). The runner
reads everything it needs from the specs: actions, connection schemas, pull
types, OAuth providers, service mounts, reconciliation defaults.

Discovery reads the installed distributions' ``entry_points.txt`` files on
``sys.path`` — the files ``importlib.metadata.entry_points`` reads — without
importing ``importlib.metadata`` (its e-mail and zip machinery costs ~80 ms,
a sixth of ``ledgerflow validate``'s budget); tests/test_connector_conformance.py
checks both find the same. Spec modules import nothing heavy, so ``validate``
never imports an HTTP client; the connector class loads on first delivery.
"""

from __future__ import annotations

import configparser
import os
import sys
from typing import Any, Mapping

from .base import Action
from .contract import ConnectorSpec, OAuthProvider, load

GROUP = "ledgerflow.connectors"


def entry_points(group: str = GROUP, path: list[str] | None = None) -> dict[str, str]:
    """name -> "module:attr" of every entry point of ``group`` on ``path`` (default sys.path);
    the first distribution on the path wins, as with importlib.metadata."""
    found: dict[str, str] = {}
    for folder in (sys.path if path is None else path):
        try:
            entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith((".dist-info", ".egg-info")):
                for name, value in _group(os.path.join(entry.path, "entry_points.txt"), group).items():
                    found.setdefault(name, value)
    return found


def _group(file: str, group: str) -> dict[str, str]:
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return {}
    if f"[{group}]" not in text:
        return {}
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str          # type: ignore[assignment,method-assign] - names are case-sensitive
    parser.read_string(text)
    return {k.strip(): v.strip() for k, v in parser[group].items()}


def discover() -> dict[str, ConnectorSpec]:
    specs: dict[str, ConnectorSpec] = {}
    for name, ref in sorted(entry_points().items()):
        spec = load(ref)
        if not isinstance(spec, ConnectorSpec) or spec.type != name:
            raise TypeError(f"entry point {GROUP}:{name} = {ref} must name a ConnectorSpec with type {name!r}")
        specs[name] = spec
    return specs


TYPES: dict[str, ConnectorSpec] = discover()

# Connector types the target pulls from (the QuickBooks Web Connector polls us):
# the delivery loop never pushes these; their own service claims and finishes them.
PULL_TYPES: set[str] = {t for t, s in TYPES.items() if s.is_pull}


def refresh() -> None:
    """Discover again (a package was installed, or a test put one on sys.path)."""
    TYPES.clear()
    TYPES.update(discover())
    PULL_TYPES.clear()
    PULL_TYPES.update(t for t, s in TYPES.items() if s.is_pull)


def spec(type_name: str) -> ConnectorSpec:
    return TYPES[type_name]


def is_pull(type_name: str) -> bool:
    return type_name in PULL_TYPES


def known_types() -> list[str]:
    return sorted(TYPES)


def actions_for(type_name: str) -> Mapping[str, Action]:
    return TYPES[type_name].actions


def payload_check(type_name: str) -> Any:
    """The spec's optional ``payload_check(action, payload, connection, settings) -> problems``."""
    return TYPES[type_name].payload_check


def connector_class(type_name: str) -> Any:
    return TYPES[type_name].connector_class()


def oauth_providers() -> dict[str, tuple[str, OAuthProvider]]:
    """``ledgerflow connect`` systems: system -> (connector type, provider)."""
    return {s.oauth.system: (t, s.oauth) for t, s in sorted(TYPES.items()) if s.oauth is not None}


def mounts() -> list[str]:
    """Every service mount the connectors declare ("module:function(app) -> (prefix, ASGI app)")."""
    return [m for _, s in sorted(TYPES.items()) for m in s.mounts]


def booked_amounts() -> dict[str, dict[str, str]]:
    """Reconciliation defaults: "<type>.<action>" -> where its payload keeps amount, currency, rate."""
    return {f"{t}.{action}": dict(paths) for t, s in sorted(TYPES.items()) for action, paths in s.booked_amount.items()}
