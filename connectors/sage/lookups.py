"""Ledger accounts, tax rates and bank accounts by name, nominal code or id — cached.

Each resource's index (id -> the names it answers to) is kept in process and
in the store's ``kv_cache`` table for ``ttl`` seconds, so workers share it. A
name that is not in a cached index makes one fresh fetch before it is an error.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from connectors.base import ErrorKind, TargetError

# resource -> (the attributes to ask for, what a mapping may call it, words for messages)
RESOURCES: dict[str, tuple[str, Callable[[dict], list[str]], str]] = {
    "ledger_accounts": ("name,display_name,nominal_code",
                        lambda r: [r.get("name"), r.get("display_name"), r.get("nominal_code"), r.get("displayed_as")],
                        "ledger account"),
    "bank_accounts": ("bank_account_details,nominal_code",
                      lambda r: [(r.get("bank_account_details") or {}).get("account_name"), r.get("nominal_code"),
                                 r.get("displayed_as")],
                      "bank account"),
    "tax_rates": ("name", lambda r: [r.get("name"), r.get("displayed_as")], "tax rate"),
}


def _norm(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


class Lookups:
    def __init__(self, client: Any, cache: Any, namespace: str, ttl: float = 3600.0,
                 clock: Callable[[], float] = time.time):
        self.client = client
        self.cache = cache              # the runtime's key/value cache (None: memory only)
        self.namespace = namespace
        self.ttl = ttl
        self.clock = clock
        self._memory: dict[str, tuple[float, dict[str, list[str]]]] = {}
        self.fetches = 0

    # ---- the index -------------------------------------------------------------------

    def _fetch(self, resource: str) -> dict[str, list[str]]:
        attributes, names, _ = RESOURCES[resource]
        index: dict[str, list[str]] = {}
        for row in self.client.iter_list(resource, {"attributes": attributes}):
            index[row["id"]] = sorted({_norm(n) for n in names(row) if n})
        self.fetches += 1
        return index

    def _cached(self, resource: str) -> dict[str, list[str]] | None:
        now = self.clock()
        hit = self._memory.get(resource)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        if self.cache is None:
            return None
        row = self.cache.entry(self.namespace, resource)
        if row and now - row[1] < self.ttl:
            index = json.loads(row[0])
            self._memory[resource] = (row[1], index)
            return index
        return None

    def _save(self, resource: str, index: dict[str, list[str]]) -> None:
        now = self.clock()
        self._memory[resource] = (now, index)
        if self.cache is not None:
            self.cache.put(self.namespace, resource, json.dumps(index))

    def index(self, resource: str, *, fresh: bool = False) -> dict[str, list[str]]:
        cached = None if fresh else self._cached(resource)
        if cached is not None:
            return cached
        index = self._fetch(resource)
        self._save(resource, index)
        return index

    # ---- resolving ----------------------------------------------------------------------

    @staticmethod
    def _match(index: dict[str, list[str]], value: str) -> list[str]:
        if value in index:
            return [value]
        wanted = _norm(value)
        return [rid for rid, names in index.items() if wanted in names]

    def resolve(self, resource: str, value: str, field: str) -> str:
        """The id of the ``resource`` called ``value``; PERMANENT when none or several match."""
        _, _, noun = RESOURCES[resource]
        matches = self._match(self.index(resource), value)
        if not matches:
            matches = self._match(self.index(resource, fresh=True), value)
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise TargetError(f"{field}: no {noun} named or coded {value!r} in Sage (expected a name, nominal "
                              f"code or id of an existing {noun})", ErrorKind.PERMANENT, field=field)
        raise TargetError(f"{field}: {value!r} matches {len(matches)} {noun}s in Sage; use the nominal code or id",
                          ErrorKind.PERMANENT, field=field)
