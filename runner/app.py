"""A loaded project at run time: settings, flows, the store and connectors."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import LedgerflowError, SpecError
from .planner import Operation, PlanContext, plan
from .spec import Flow, Project, iter_flow_files, load_flow, load_project


class App:
    def __init__(self, project: Project | None = None):
        self.project = project or load_project()
        self._flows: dict[str, Flow] | None = None
        self._connectors: dict[str, Any] = {}

    # ---- configuration -------------------------------------------------------

    @cached_property
    def store(self):
        from .store import open_store
        return open_store(self.project.store_url)

    @cached_property
    def secrets(self):
        from .secrets import SecretResolver
        return SecretResolver()

    @cached_property
    def postings(self):
        """The accounting model's source of postings (balance transactions cached in the store)."""
        from .posting.source import PostingSource
        return PostingSource.for_app(self)

    def context(self, lookups: dict | None = None, params: dict | None = None) -> PlanContext:
        return PlanContext(settings=self.project.settings,
                           connection_types={k: v.get("type") for k, v in self.project.connections.items()},
                           lookups=lookups or {}, params=params or {}, connections=self.project.connections,
                           postings=self.postings)

    def flow_dir(self) -> Path:
        return self.project.dir / "flows"

    def flows(self, reload: bool = False) -> dict[str, Flow]:
        """Every flow under flows/ (validated; a broken flow stops start-up with its problems)."""
        if self._flows is None or reload:
            flows: dict[str, Flow] = {}
            problems = []
            for path in iter_flow_files([self.flow_dir()]):
                try:
                    f = load_flow(path, self.project)
                except SpecError as exc:
                    problems.extend(exc.problems)
                    continue
                if f.name in flows:
                    raise LedgerflowError(f"{f.file}: flow name {f.name!r} is also used by {flows[f.name].file}")
                flows[f.name] = f
            if problems:
                raise SpecError(problems)
            self._flows = flows
        return self._flows

    def flow(self, name_or_path: str) -> Flow:
        p = Path(name_or_path)
        if p.suffix in (".yaml", ".yml") or p.exists():
            return load_flow(p, self.project)
        flows = self.flows()
        if name_or_path not in flows:
            raise LedgerflowError(f"no flow named {name_or_path!r} (known: {', '.join(sorted(flows)) or 'none'})")
        return flows[name_or_path]

    def flows_for(self, event_type: str) -> list[Flow]:
        return [f for f in self.flows().values() if f.matches(event_type)]

    # ---- planning --------------------------------------------------------------

    def plan_event(self, event: dict, flow: Flow, *, pinned_lookups: dict | None = None,
                   params: dict | None = None) -> list[Operation]:
        from .lookups import resolve_lookups
        ctx = self.context(params=params)
        pinned = dict(pinned_lookups or {})
        if "balance_transaction" in pinned:       # a flow test pins the balance transaction
            ctx.pinned_bt = pinned.pop("balance_transaction")
        if flow.lookups:
            ctx.lookups = resolve_lookups(event, flow, ctx, pinned, lazy=True)
        return plan(event, flow, ctx)

    # ---- connectors ------------------------------------------------------------

    def connector(self, connection: str):
        if connection not in self._connectors and connection == "(plan)":
            from .replan import PlanConnector
            self._connectors[connection] = PlanConnector(self)
        if connection not in self._connectors:
            from connectors import registry
            from connectors.base import Runtime
            cfg = self.project.connections.get(connection)
            if cfg is None:
                raise LedgerflowError(f"no connection named {connection!r} in {self.project.file}")
            cls = registry.connector_class(cfg["type"])
            runtime = Runtime(project_dir=self.project.dir, settings=self.project.settings, secrets=self.secrets,
                              store=self.store, connection_configs=self.project.connections)
            self._connectors[connection] = cls(connection, cfg, runtime)
        return self._connectors[connection]

    def close(self) -> None:
        for c in self._connectors.values():
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass
        self._connectors.clear()
