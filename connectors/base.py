"""The connector contract shared by every target."""

from __future__ import annotations

import enum
from collections import abc
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, ClassVar, Mapping


@dataclass(frozen=True)
class Action:
    """One thing a connector can do, with the JSON Schema its payload must satisfy.

    ``check`` is an optional semantic check beyond the schema (a journal must
    balance, say); it returns human-readable problems, empty when all is well.
    ``examples`` are payloads that pass both (the conformance suite checks them;
    a reader copies them into a mapping).
    """

    name: str
    schema: Mapping[str, Any]
    description: str = ""
    check: Callable[[Mapping[str, Any]], list[str]] | None = None
    examples: tuple[Mapping[str, Any], ...] = ()


class ErrorKind(str, enum.Enum):
    RETRYABLE = "retryable"      # timeout, connection error, 5xx, busy
    THROTTLED = "throttled"      # 429: wait, and it does not count as an attempt
    PERMANENT = "permanent"      # the target rejected the data: dead-letter at once
    AUTH = "auth"                # authentication failed after a refresh: reconnect


class TargetError(Exception):
    """A failure talking to a target, classified for the retry policy."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.RETRYABLE, *,
                 retry_after: float | None = None, field: str | None = None):
        self.kind = kind
        self.retry_after = retry_after
        self.field = field
        super().__init__(message)


@dataclass
class Item:
    """One operation handed to a connector, as stored in its delivery row."""

    delivery_id: int
    idempotency_key: str
    action: str
    payload: dict[str, Any]
    attempts: int = 0               # attempts made before this one
    target_ref: str | None = None   # what an earlier attempt learned, if anything
    created_at: float | None = None  # when the operation was planned (stable across retries)


@dataclass
class Outcome:
    """What happened to one item. ``error`` is None exactly when ``ok``."""

    delivery_id: int
    ok: bool
    target_ref: str | None = None
    error: TargetError | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sent(cls, item: Item, target_ref: str | None = None, **detail: Any) -> "Outcome":
        return cls(item.delivery_id, True, target_ref, None, dict(detail))

    @classmethod
    def failed(cls, item: Item, error: TargetError) -> "Outcome":
        return cls(item.delivery_id, False, None, error)


class Connector:
    """Base class. Subclasses set ``type`` and ``actions`` and implement ``deliver``."""

    type: ClassVar[str]
    actions: ClassVar[Mapping[str, Action]]

    def __init__(self, name: str, config: Mapping[str, Any], runtime: "Runtime"):
        self.name = name
        self.config = dict(config)
        self.runtime = runtime

    def deliver(self, items: list[Item]) -> list[Outcome]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass


class LedgerflowError(Exception):
    """Base class: the message is meant for the person running ledgerflow (a connection's
    configuration is wrong, say). ``runner.core.errors.LedgerflowError`` is this class, so the CLI
    reports a connector's errors like its own."""


@dataclass(frozen=True)
class Limit:
    """One limit for ``Runtime.limiter``: at most ``rate`` requests started in any sliding
    ``per``-second window under ``key``, at most ``concurrency`` in flight."""

    key: str
    rate: int | None = None          # requests per window; None: no rate limit
    per: float = 60.0                # window, seconds
    concurrency: int | None = None   # requests in flight; None: unlimited
    lease: float = 120.0             # how long an unreleased slot holds a concurrency place


class RateLimitTimeout(LedgerflowError):
    """``Runtime.limiter.acquire`` would have to wait longer than ``max_wait``."""

    def __init__(self, keys: list[str], wait: float):
        self.wait = wait
        super().__init__(f"rate limit for {', '.join(keys)} would need a wait of {wait:.1f} s")


@dataclass
class Runtime:
    """What a connector may use from the runner, and nothing else (connectors/CONTRACT.md):
    the project's ``settings`` and folder, ``secrets`` (a resolver of secret references),
    ``cache`` (a key/value cache shared by every worker), ``limiter`` (the store-backed rate
    limiter shared by every worker), ``tokens`` (the OAuth token rows, for connectors.oauth)
    and ``qbwc`` (the Web Connector's queue), each injected by the runner
    (runner/connector_runtime.py). All are None without a store (a connector then keeps
    look-ups in memory). A service a connector mounts in ``ledgerflow serve`` also reads the
    project's ``connections`` and its ``serve`` section."""

    project_dir: Any
    settings: Mapping[str, Any]
    secrets: Any = None          # runner.core.secrets.SecretResolver
    cache: Any = None
    limiter: Any = None
    tokens: Any = None
    qbwc: Any = None
    connections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    serve: Mapping[str, Any] = field(default_factory=dict)


def decimal_sum(values: list[Any]) -> Decimal:
    total = Decimal(0)
    for v in values:
        total += v if isinstance(v, Decimal) else Decimal(str(v))
    return total


def find_values(payload: Any, pick: Callable[[str, Any], str | None]) -> set[str]:
    """Every value ``pick(key, value)`` finds in a payload's nested mappings and lists (``pick``
    returns None to look inside the value instead), e.g. the currencies a document names."""
    found: set[str] = set()
    if isinstance(payload, (dict, abc.Mapping)):       # typing.Mapping's isinstance is slow (planner's hot path)
        for k, v in payload.items():
            hit = pick(k, v)
            if hit is not None:
                found.add(hit)
            else:
                found |= find_values(v, pick)
    elif isinstance(payload, list):
        for v in payload:
            found |= find_values(v, pick)
    return found

