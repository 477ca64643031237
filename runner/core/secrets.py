"""Secrets are references, never values: ``{env: NAME}`` or ``{prefect_secret: block}``.

``find_literal_secrets`` flags a secret pasted into a flow, mapping or project
file; ``SecretResolver`` turns references into values at run time, and never
logs them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator, Mapping

from runner.core.errors import LedgerflowError

# Stripe secret and restricted keys, webhook signing secrets, Slack tokens and
# webhook URLs, bearer tokens, PEM private keys.
LITERAL_SECRET = re.compile(
    r"(?<![A-Za-z0-9])("
    r"(sk|rk)_(live|test)_[A-Za-z0-9]{6,}"
    r"|whsec_[A-Za-z0-9+/=]{6,}"
    r"|xox[abposr]-[A-Za-z0-9-]{6,}"
    r"|hooks\.slack\.com/services/[A-Za-z0-9/]{6,}"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|Bearer\s+[A-Za-z0-9._~+/-]{20,}"
    r")"
)


def _walk(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str):
                yield path + (k,), k
            yield from _walk(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, path + (i,))


def find_literal_secrets(value: Any) -> list[tuple[tuple, str]]:
    """(path, kind) for every string that looks like a pasted secret."""
    found = []
    for path, s in _walk(value):
        m = LITERAL_SECRET.search(s)
        if m:
            token = m.group(1)
            kind = token.split("_")[0] + "_..." if "_" in token[:6] else token[:8] + "..."
            found.append((path, kind))
    return found


class SecretError(LedgerflowError):
    pass


def is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and (
        "env" in value or "prefect_secret" in value)


class SecretResolver:
    """Resolves secret references; caches Prefect blocks for the process."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        self._environ = environ if environ is not None else os.environ
        self._cache: dict[str, str] = {}

    def resolve(self, ref: Any, what: str) -> str:
        if not is_ref(ref):
            raise SecretError(f"{what}: expected a secret reference like {{env: NAME}} "
                              f"or {{prefect_secret: block-name}}")
        if "env" in ref:
            name = ref["env"]
            value = self._environ.get(name)
            if not value:
                raise SecretError(f"{what}: environment variable {name} is not set")
            return value
        block = ref["prefect_secret"]
        if block not in self._cache:
            try:
                from prefect.blocks.system import Secret
                self._cache[block] = Secret.load(block).get()
            except Exception as exc:  # noqa: BLE001 - any failure: say which block
                raise SecretError(f"{what}: cannot load Prefect Secret block {block!r}: "
                                  f"{type(exc).__name__}") from None
        return self._cache[block]

    def resolve_optional(self, ref: Any, what: str) -> str | None:
        return None if ref is None else self.resolve(ref, what)
