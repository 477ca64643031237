"""A loaded project at run time: settings, flows, the store and connectors.

The configuration (the project file and its flows) is one immutable snapshot,
replaced whole by ``reload()`` (hot reload, ``runner.operate.reload``): a reader that
took ``app.project`` or ``app.flows()`` keeps a consistent version while a
newer one is swapped in; nothing is changed in place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.connector_runtime import connector_runtime
from runner.core.errors import LedgerflowError, Problem, SpecError
from runner.language.spec import Flow, Project, iter_flow_files, load_flow, load_project

if TYPE_CHECKING:       # the planner (Jinja, the accounting model) loads on first plan, not with serve's receiver
    from runner.language.planner import Operation, PlanContext

log = logging.getLogger("ledgerflow.reload")

RETIRED_GRACE = 300.0      # seconds a replaced connector stays open for a batch still using it
_TYPES_INDEXED = 1024      # event types whose matching flows App.flows_for keeps (Stripe has ~250)


@dataclass(frozen=True)
class Config:
    """One version of the configuration. ``cache`` holds what is derived from the project
    (the postings source); it is shared by versions whose project file is unchanged."""

    project: Project
    flows: dict[str, Flow] | None = None          # None: not loaded yet
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reload:
    """What ``App.reload()`` did: refused (``problems``), applied (``changes``), or nothing to do."""

    problems: list[Problem] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return not self.problems and bool(self.changes)


def _load_flows(project: Project) -> dict[str, Flow]:
    flows: dict[str, Flow] = {}
    problems = []
    for path in iter_flow_files([project.dir / "flows"]):
        try:
            f = load_flow(path, project)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        if f.name in flows:
            raise LedgerflowError(f"{f.file}: flow name {f.name!r} is also used by {flows[f.name].file}")
        flows[f.name] = f
    if problems:
        raise SpecError(problems)
    return flows


class App:
    def __init__(self, project: Project | None = None):
        self._config = Config(project or load_project())
        self._connectors: dict[str, Any] = {}
        self._retired: list[tuple[float, Any]] = []        # (retired at, connector) after a reload
        self._lock = threading.RLock()
        self._reload_listeners: list[Callable[[Config, Config], None]] = []
        self._flow_index: tuple[dict | None, dict[str, list[Flow]]] = (None, {})   # flows_for's

    # ---- configuration -------------------------------------------------------

    @property
    def project(self) -> Project:
        return self._config.project

    @property
    def config(self) -> Config:
        return self._config

    @cached_property
    def store(self):
        from runner.store import open_store
        return open_store(self.project.store_url)

    @cached_property
    def secrets(self):
        from runner.core.secrets import SecretResolver
        return SecretResolver()

    @property
    def postings(self):
        """The accounting model's source of postings (balance transactions cached in the store),
        built once per version of the project file."""
        cache = self._config.cache
        if "postings" not in cache:
            from runner.language.posting.source import PostingSource
            cache["postings"] = PostingSource.for_app(self)
        return cache["postings"]

    def context(self, lookups: dict | None = None, params: dict | None = None) -> PlanContext:
        from runner.language.planner import PlanContext
        config = self._config
        project = config.project
        types = config.cache.get("connection_types")
        if types is None:
            types = config.cache["connection_types"] = {k: v.get("type") for k, v in project.connections.items()}
        return PlanContext(settings=project.settings, connection_types=types,
                           lookups=lookups or {}, params=params or {}, connections=project.connections,
                           postings=self.postings)

    def flow_dir(self) -> Path:
        return self.project.dir / "flows"

    def flows(self, reload: bool = False) -> dict[str, Flow]:
        """Every flow under flows/ (validated; a broken flow raises SpecError with its problems).
        ``reload``: read the flow files again (a replay, say) with the running project file; a broken
        one raises and the running flows stay. ``reload()`` is the full hot reload."""
        config = self._config
        if config.flows is None or reload:
            flows = _load_flows(config.project)
            with self._lock:
                if self._config is config:         # a hot reload in between wins
                    self._config = Config(config.project, flows, config.cache)
            if config.flows is not None and self._config.flows is flows:
                from runner.language.changes import flow_changes
                changes = flow_changes(config.flows, flows)
                if changes:
                    log.info("flows re-read: %s", "; ".join(changes))
            return flows
        return config.flows

    def flow(self, name_or_path: str) -> Flow:
        p = Path(name_or_path)
        if p.suffix in (".yaml", ".yml") or p.exists():
            return load_flow(p, self.project)
        flows = self.flows()
        if name_or_path not in flows:
            raise LedgerflowError(f"no flow named {name_or_path!r} (known: {', '.join(sorted(flows)) or 'none'})")
        return flows[name_or_path]

    def flows_for(self, event_type: str) -> list[Flow]:
        """The flows whose trigger matches an event type; the answer is kept per type for the
        running flows (a reload's new flows start a new index)."""
        flows = self.flows()
        index = self._flow_index
        if index[0] is not flows:
            index = self._flow_index = (flows, {})
        found = index[1].get(event_type)
        if found is None:
            found = [f for f in flows.values() if f.matches(event_type)]
            if len(index[1]) < _TYPES_INDEXED:
                index[1][event_type] = found
        return list(found)

    # ---- hot reload --------------------------------------------------------------

    def on_reload(self, listener: Callable[[Config, Config], None]) -> None:
        """Call ``listener(old, new)`` after each applied reload (the webhook receiver's endpoints)."""
        self._reload_listeners.append(listener)

    def reload(self, reason: str = "on demand") -> Reload:
        """Load and check the project file, every flow and mapping as ``ledgerflow validate`` does;
        swap the new version in only when it is clean (one log line names what changed, after
        ``reason``). A refused version changes nothing."""
        from runner.language.changes import describe_changes, endpoint_problems, restart_problems
        from runner.language.validate import check_project
        with self._lock:
            old = self._config
            project, flows, problems = check_project(old.project.path or old.project.file)
            if not problems:
                problems = restart_problems(old.project, project) or endpoint_problems(self, old.project, project)
            if problems:
                return Reload(problems=problems)
            changes = describe_changes(old, project, flows)
            if not changes:
                return Reload()
            if project.raw == old.project.raw:     # flows or mappings only: keep what the project file gave
                project = old.project
            new = Config(project, flows, old.cache if project is old.project else {})
            self._retire_connectors(old.project, project)
            self._config = new
        log.info("configuration reloaded (%s): %s", reason, "; ".join(changes))
        for listener in self._reload_listeners:
            try:
                listener(old, new)
            except Exception:  # noqa: BLE001 - one part failing to follow must not undo the reload
                log.exception("applying the reloaded configuration to %r failed", listener)
        return Reload(changes=changes)

    def _retire_connectors(self, old: Project, new: Project) -> None:
        """Connectors whose connection (or the settings) changed are replaced on next use; the old
        ones are closed after ``RETIRED_GRACE`` (a batch in flight may still hold one)."""
        same_settings = old.settings == new.settings
        for name in list(self._connectors):
            if name == "(plan)" or (same_settings and old.connections.get(name) == new.connections.get(name)):
                continue
            self._retired.append((time.monotonic(), self._connectors.pop(name)))

    def close_retired(self, grace: float = RETIRED_GRACE) -> int:
        """Close connectors replaced by a reload at least ``grace`` seconds ago; the number closed."""
        with self._lock:
            now = time.monotonic()
            due = [c for at, c in self._retired if now - at >= grace]
            self._retired = [(at, c) for at, c in self._retired if now - at < grace]
        for c in due:
            _close(c)
        return len(due)

    # ---- planning --------------------------------------------------------------

    def plan_event(self, event: dict, flow: Flow, *, pinned_lookups: dict | None = None,
                   params: dict | None = None, shared: dict | None = None) -> list[Operation]:
        """``shared``: one dict per event when it is planned through several flows (its posting
        is built once; see PlanContext.shared)."""
        from runner.language.lookups import resolve_lookups
        from runner.language.planner import plan
        ctx = self.context(params=params)
        ctx.shared = shared
        pinned = dict(pinned_lookups or {})
        if "balance_transaction" in pinned:       # a flow test pins the balance transaction
            ctx.pinned_bt = pinned.pop("balance_transaction")
        if flow.lookups:
            ctx.lookups = resolve_lookups(event, flow, ctx, pinned, lazy=True)
        return plan(event, flow, ctx)

    # ---- connectors ------------------------------------------------------------

    def connector(self, connection: str):
        found = self._connectors.get(connection)
        if found is not None:
            return found
        with self._lock:
            if connection not in self._connectors:
                self._connectors[connection] = self._new_connector(connection)
            return self._connectors[connection]

    def _new_connector(self, connection: str):
        from connectors import registry
        project = self.project
        cfg = project.connections.get(connection)
        if cfg is None:
            raise LedgerflowError(f"no connection named {connection!r} in {project.file}")
        cls = registry.connector_class(cfg["type"])
        # the narrow runtime (connectors/CONTRACT.md): services over the store, never the store itself
        runtime = connector_runtime(project.dir, project.settings, self.secrets, self.store)
        return cls(connection, cfg, runtime)

    def close(self) -> None:
        with self._lock:
            connectors = list(self._connectors.values()) + [c for _, c in self._retired]
            self._connectors.clear()
            self._retired.clear()
        for c in connectors:
            _close(c)


def _close(connector: Any) -> None:
    try:
        connector.close()
    except Exception:  # noqa: BLE001
        pass
