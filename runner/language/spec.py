"""Loading and checking the project file and flow files.

Every problem is collected (not just the first) and carries file:line:col.
A loaded ``Flow`` has every template compiled, once, for planning at speed.

The template engine (``mapping``, ``templating``: Jinja) is imported where a flow
or mapping is compiled, not with this module: loading the project file alone
(``ledgerflow serve``'s receiver, before its port opens) does not need it.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core.durations import parse_duration  # noqa: F401 - the flow language's durations
from runner.core.errors import Problem, SpecError
from runner.core.secrets import find_literal_secrets
from runner.language.yamlsrc import Document, load_file

if TYPE_CHECKING:
    from runner.language.mapping import Mapping_
    from runner.language.templating import Compiled, Environment

PROJECT_FILE = "ledgerflow.yaml"
SCHEMA_DIR = Path(__file__).parent / "schema"

# Names a template may read besides lookups: the event, its object under the
# object's own name, settings and vars.
BASE_NAMES = {"event", "data", "object", "account", "settings", "vars", "lookups", "flow", "route", "posting", "doc",
              "params"}
# Stripe object types a flow's event may carry (event.data.object.object,
# dots as underscores). A name outside this set and the flow's look-ups is a typo.
STRIPE_OBJECTS = set("""
account application_fee balance balance_transaction bank_account capability card charge
checkout_session coupon credit_note customer customer_cash_balance_transaction discount dispute
fee_refund file invoice invoiceitem issuing_authorization issuing_card issuing_cardholder
issuing_dispute issuing_transaction mandate payment_intent payment_link payment_method payout
person plan price product promotion_code quote refund review setup_intent source subscription
subscription_item subscription_schedule tax_rate topup transfer transfer_reversal
reserve_transaction reporting_report_run
""".split())


@lru_cache(maxsize=4)
def _schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / name).read_text())


def _schema_problems(doc: Document, schema_name: str) -> list[Problem]:
    return _problems_against(doc, _schema(schema_name), doc.data)


def _problems_against(doc: Document, schema: dict, data: Any, base: tuple = (), *,
                      unknown: str = "unknown key {key!r} in {where}") -> list[Problem]:
    """Every way ``data`` (found at ``base`` in the document) breaks ``schema``, at file:line:col;
    an unknown key is pointed at (``unknown`` words it), with the nearest valid name when one is
    close (for a connection's settings) or else the valid ones."""
    from runner.language.schemacheck import errors

    problems = []
    for err in errors(schema, data):
        from runner.language.mapping import field_name
        path = base + tuple(err.absolute_path)
        where = field_name(path) if path else "the document"
        if err.validator == "additionalProperties":
            known = err.schema.get("properties", {})
            for k in [k for k in (err.instance or {}) if k not in known]:
                close = difflib.get_close_matches(str(k), list(known), n=1) if base else []
                hint = f": did you mean `{close[0]}`?" if close else f" (expected one of: {', '.join(sorted(known))})"
                problems.append(doc.key_problem(path + (k,), unknown.format(key=k, where=where) + hint))
            continue
        problems.append(doc.problem(path, f"{where}: {err.message}"))
    return problems


def _secret_problems(doc: Document) -> list[Problem]:
    found = list(find_literal_secrets(doc.data))
    if not found:
        return []
    from runner.language.mapping import field_name
    return [doc.problem(path, f"{field_name(path)}: looks like a literal secret ({kind}); "
                              "reference it instead: {env: NAME} or {prefect_secret: block-name}")
            for path, kind in found]


# ---- project -----------------------------------------------------------------

@dataclass
class Project:
    dir: Path
    file: str
    doc: Document
    settings: dict[str, Any]
    vars: dict[str, Any]
    connections: dict[str, dict[str, Any]]
    raw: dict[str, Any]
    path: Path | None = None

    @property
    def timezone(self) -> str:
        return self.settings.get("timezone", "UTC")

    @property
    def state_dir(self) -> Path:
        return (self.dir / self.settings.get("state_dir", ".ledgerflow")).resolve()

    @property
    def store_url(self) -> str:
        url = os.environ.get("LEDGERFLOW_STORE_URL") or self.settings.get("store_url")
        if url:
            return url
        return f"sqlite:///{self.state_dir / 'ledgerflow.db'}"

    def env(self) -> Environment:
        from runner.language.templating import environment
        return environment(self.timezone)

    def connection_type(self, name: str) -> str | None:
        c = self.connections.get(name)
        return c.get("type") if c else None


def find_project_file(start: Path | None = None) -> Path | None:
    env = os.environ.get("LEDGERFLOW_PROJECT")
    if env:
        return Path(env)
    here = (start or Path.cwd()).resolve()
    if here.is_file():
        here = here.parent
    for d in [here, *here.parents]:
        candidate = d / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


_NO_CONNECTORS = "none: is ledgerflow installed? `pip install -e .` registers the shipped connectors"


def project_problems(doc: Document) -> list[Problem]:
    from connectors import registry

    problems = _schema_problems(doc, "project.schema.json") + _secret_problems(doc)
    data = doc.data if isinstance(doc.data, dict) else {}
    for name, conn in (data.get("connections") or {}).items():
        if not isinstance(conn, dict) or "type" not in conn:
            continue
        spec = registry.TYPES.get(conn["type"]) if isinstance(conn["type"], str) else None
        if spec is None:
            close = difflib.get_close_matches(str(conn["type"]), registry.known_types(), n=1)
            problems.append(doc.problem(("connections", name, "type"),
                                        f"connections.{name}.type: unknown connector type {conn.get('type')!r} "
                                        + (f"(did you mean `{close[0]}`? " if close else "(")
                                        + f"known: {', '.join(registry.known_types()) or _NO_CONNECTORS}; a "
                                          f"connector package registers its type in the {registry.GROUP} entry points)"))
            continue
        # the connector's own schema (connectors/CONTRACT.md): a misspelt setting is an error, not a default
        problems.extend(_problems_against(doc, spec.config, conn, ("connections", name),
                                          unknown=f"{{where}}: unknown setting {{key!r}} for a connection of type {spec.type}"))
    tz = (data.get("settings") or {}).get("timezone")
    if isinstance(tz, str):
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(tz)
        except Exception:  # noqa: BLE001
            problems.append(doc.problem(("settings", "timezone"),
                                        f"settings.timezone: unknown time zone {tz!r} "
                                        "(expected an IANA name such as Europe/Paris)"))
    return problems


def load_project(path: str | Path | None = None) -> Project:
    p = Path(path) if path else find_project_file()
    if p is None:
        raise SpecError([Problem(PROJECT_FILE, 1, 1, "no ledgerflow.yaml here or in any parent folder "
                                                     "(pass --project or set LEDGERFLOW_PROJECT)")])
    doc = load_file(p, _display(p))
    problems = project_problems(doc)
    if problems:
        raise SpecError(problems)
    data = doc.data
    settings = {"timezone": "UTC", "state_dir": ".ledgerflow", "fx_provider": "ecb", "batch_size": 100,
                **(data.get("settings") or {})}
    return Project(dir=p.resolve().parent, file=doc.file, doc=doc, settings=settings,
                   vars=dict(data.get("vars") or {}), connections=dict(data.get("connections") or {}),
                   raw=data, path=p.resolve())


def _display(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# ---- flows --------------------------------------------------------------------

@dataclass
class Route:
    name: str
    target: str
    action: str
    mapping: Mapping_
    when: Compiled | None = None
    fallback: bool = False
    idempotency_key: Compiled | None = None
    pos: tuple[int, int] = (1, 1)


@dataclass
class Lookup:
    name: str
    kind: str
    params: dict[str, Compiled | str]
    provider: str | None = None


@dataclass
class RetryPolicy:
    attempts: int = 6
    backoff: str = "exponential"
    first_delay: float = 5.0
    max_delay: float = 900.0
    jitter: bool = True

    def as_json(self) -> str:
        return _policy_json(self.attempts, self.backoff, self.first_delay, self.max_delay, self.jitter)

    @classmethod
    def from_json(cls, text: str | None) -> "RetryPolicy":
        return cls(**json.loads(text)) if text else cls()

    def delay(self, attempt: int, rand: float = 1.0) -> float:
        """Seconds before attempt ``attempt + 1`` (attempt counts from 1); ``rand`` in [0, 1] for jitter."""
        base = self.first_delay if self.backoff == "fixed" else self.first_delay * (2 ** max(0, attempt - 1))
        base = min(base, self.max_delay)
        return base * (0.5 + 0.5 * rand) if self.jitter else base


@dataclass
class Flow:
    name: str
    file: str
    doc: Document
    description: str
    stripe_types: list[str]
    schedule: dict[str, Any] | None
    filter: Compiled | None
    lookups: list[Lookup]
    routes: list[Route]
    retry: RetryPolicy
    alert: dict[str, Any]
    vars: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None       # the flow file, absolute
    reads_posting: bool = False    # a template reads `posting` or `doc` (the accounting model)

    def matches(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.stripe_types)


@lru_cache(maxsize=256)
def _policy_json(attempts: int, backoff: str, first_delay: float, max_delay: float, jitter: bool) -> str:
    return json.dumps({"attempts": attempts, "backoff": backoff, "first_delay": first_delay,
                       "max_delay": max_delay, "jitter": jitter}, sort_keys=True)


class MappingCache:
    """Mappings are shared between flows: compile each file once per process (once per version
    of the file: its mtime in ns, size and inode, so a save within one clock tick still counts)."""

    def __init__(self):
        self._by_path: dict[tuple[Path, str], tuple[tuple, Mapping_ | SpecError]] = {}

    def get(self, path: Path, display: str, env: Environment) -> Mapping_:
        key = (path.resolve(), str(id(env)))
        try:
            st = path.stat()
            mtime: tuple = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            mtime = ()
        hit = self._by_path.get(key)
        if hit and hit[0] == mtime:
            if isinstance(hit[1], SpecError):
                raise hit[1]
            return hit[1]
        from runner.language.mapping import compile_mapping
        try:
            doc = load_file(path, display)
            secret = _secret_problems(doc)
            mapping = compile_mapping(doc, env)
            if secret:
                raise SpecError(secret)
            self._by_path[key] = (mtime, mapping)
            return mapping
        except SpecError as exc:
            self._by_path[key] = (mtime, exc)
            raise


MAPPINGS = MappingCache()


def load_flow(path: str | Path, project: Project, *, check_names: bool = True) -> Flow:
    """Load, check and compile one flow file; raise SpecError with every problem."""
    from connectors import registry
    from runner.language.mapping import check_shape, field_name
    from runner.language.templating import Compiled, TemplateProblem, referenced_names, unsafe_attributes

    p = Path(path)
    doc = load_file(p, _display(p))
    problems = _schema_problems(doc, "flow.schema.json") + _secret_problems(doc)
    if problems or not isinstance(doc.data, dict):
        raise SpecError(problems or [doc.problem((), "a flow must be a YAML mapping")])
    data = doc.data
    env = project.env()
    lookup_names = set((data.get("lookups") or {}).keys())
    allowed = BASE_NAMES | STRIPE_OBJECTS | lookup_names
    read: set[str] = set()      # every top-level name the flow's templates read

    def compile_at(source: str, path: tuple, expression: bool) -> Compiled | None:
        try:
            compiled = Compiled(env, source, expression=expression)
            read.update(referenced_names(env, source, expression=expression))
        except TemplateProblem as exc:
            problems.append(doc.problem(path, f"{field_name(path)}: {exc}"))
            return None
        for attr in unsafe_attributes(env, source, expression=expression):
            problems.append(doc.problem(path, f"{field_name(path)}: attribute {attr!r} is not allowed "
                                              "(templates run in a sandbox)"))
        if check_names:
            for name in sorted(referenced_names(env, source, expression=expression) - allowed):
                problems.append(doc.problem(path, f"{field_name(path)}: undefined name {name!r} "
                                                  f"(templates can read: event, the event's object by type, "
                                                  f"account, settings, vars{', ' if lookup_names else ''}"
                                                  f"{', '.join(sorted(lookup_names))})"))
        return compiled

    flt = compile_at(data["filter"], ("filter",), True) if "filter" in data else None

    lookups = []
    for name, spec in (data.get("lookups") or {}).items():
        kind, params = next(iter(spec.items()))
        compiled_params = {}
        for k, v in params.items():
            if k == "provider":
                continue
            compiled_params[k] = compile_at(v, ("lookups", name, kind, k), False) if isinstance(v, str) else v
        lookups.append(Lookup(name, kind, compiled_params, params.get("provider")))

    routes: list[Route] = []
    seen: set[str] = set()
    for i, r in enumerate(data["routes"]):
        rp = ("routes", i)
        if r["name"] in seen:
            problems.append(doc.problem(rp + ("name",), f"routes[{i}].name: duplicate route name {r['name']!r}"))
        seen.add(r["name"])
        ctype = project.connection_type(r["target"])
        action_schema = None
        if ctype is None:
            known = ", ".join(sorted(project.connections)) or "none"
            problems.append(doc.problem(rp + ("target",), f"routes[{i}].target: no connection named "
                                                          f"{r['target']!r} in {project.file} (known: {known})"))
        else:
            actions = registry.actions_for(ctype)
            if r["action"] not in actions:
                problems.append(doc.problem(rp + ("action",), f"routes[{i}].action: connector {ctype} has no "
                                                              f"action {r['action']!r} (expected one of: "
                                                              f"{', '.join(sorted(actions))})"))
            else:
                action_schema = actions[r["action"]].schema
        when = compile_at(r["when"], rp + ("when",), True) if "when" in r else None
        if r.get("fallback") and "when" in r:
            problems.append(doc.problem(rp + ("when",), f"routes[{i}]: a fallback route runs when no other "
                                                        "route did; it takes no when"))
        key = compile_at(r["idempotency_key"], rp + ("idempotency_key",), False) if "idempotency_key" in r else None
        mapping = None
        try:
            mapping = _load_route_mapping(r["mapping"], doc, rp, project, env)
        except SpecError as exc:
            problems.extend(exc.problems)
        if mapping is not None:
            read.update(mapping.names)
            if check_names:
                for name in sorted(mapping.names - allowed):
                    problems.append(Problem(mapping.file, 1, 1, f"undefined name {name!r} (used by flow "
                                                                f"{data['name']}, which offers: event, the "
                                                                f"event's object, account, settings, vars"
                                                                f"{', ' if lookup_names else ''}"
                                                                f"{', '.join(sorted(lookup_names))})"))
                    _pinpoint(problems, mapping, name)
            if action_schema is not None:
                problems.extend(check_shape(mapping, action_schema, f"{ctype}.{r['action']}"))
        routes.append(Route(r["name"], r["target"], r["action"], mapping, when, bool(r.get("fallback")),
                            key, doc.where(rp)))
    fallbacks = [r for r in data["routes"] if r.get("fallback")]
    if len(fallbacks) > 1:
        problems.append(doc.problem(("routes",), "routes: at most one fallback route"))

    retry = RetryPolicy()
    rdata = data.get("retry") or {}
    try:
        retry = RetryPolicy(attempts=rdata.get("attempts", 6), backoff=rdata.get("backoff", "exponential"),
                            first_delay=parse_duration(rdata.get("first_delay", "5s")),
                            max_delay=parse_duration(rdata.get("max_delay", "15m")),
                            jitter=rdata.get("jitter", True))
    except ValueError as exc:
        problems.append(doc.problem(("retry",), f"retry: {exc}"))

    trigger = data["trigger"]
    schedule = trigger.get("schedule")
    if schedule:
        problems.extend(_schedule_problems(doc, schedule))
    if "manual" in trigger:
        _warn_once(doc.problem(("trigger", "manual"), MANUAL_IGNORED))
    if check_names:     # fields Stripe's objects (and the posting) do not have
        from runner.language.stripe_fields import flow_problems
        problems.extend(flow_problems(doc, data, routes))

    if problems:
        raise SpecError(problems)
    return Flow(name=data["name"], file=doc.file, doc=doc, description=data.get("description", ""),
                stripe_types=list(trigger.get("stripe", [])), schedule=schedule,
                filter=flt, lookups=lookups, routes=routes,
                retry=retry, alert=dict(data.get("alert") or {}), vars={**project.vars, **(data.get("vars") or {})},
                raw=data, path=p.resolve(), reads_posting=bool(read & {"posting", "doc"}))


def _pinpoint(problems: list[Problem], mapping: Mapping_, name: str) -> None:
    """Replace the file-level undefined-name problem with the exact leaves."""
    from runner.language.mapping import field_name
    from runner.language.templating import environment, referenced_names
    env = environment()
    hits = []

    def walk(value: Any, path: tuple) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + (i,))
        elif isinstance(value, str) and name in value:
            try:
                expr = path and path[-1] in ("$for", "$if")
                src = value.partition(" in ")[2] if path and path[-1] == "$for" else value
                if name in referenced_names(env, src, expression=bool(expr)):
                    hits.append(path)
            except Exception:  # noqa: BLE001
                pass

    walk(mapping.doc.data, ())
    if hits:
        generic = problems.pop()
        for path in hits:
            line, col = mapping.doc.where(path)
            problems.append(Problem(mapping.file, line, col, f"{field_name(path)}: " + generic.message))


def _load_route_mapping(value: Any, doc: Document, rp: tuple, project: Project, env: Environment) -> Mapping_:
    from runner.language.mapping import compile_mapping, field_name
    if isinstance(value, dict):
        prefix = rp + ("mapping",)
        sub = Document(doc.file, value,
                       {k[len(prefix):]: v for k, v in doc.positions.items() if k[:len(prefix)] == prefix},
                       {k[len(prefix):]: v for k, v in doc.key_positions.items() if k[:len(prefix)] == prefix})
        return compile_mapping(sub, env)
    path = (project.dir / value)
    if not path.is_file():
        raise SpecError([doc.problem(rp + ("mapping",), f"{field_name(rp + ('mapping',))}: mapping file "
                                                        f"{value!r} not found (paths are relative to {project.dir})")])
    return MAPPINGS.get(path, _display(path), env)


MANUAL_IGNORED = ("trigger.manual: ignored (it never did anything: any flow can be run by hand, with `ledgerflow run "
                  "FLOW --event FILE`, a scheduled flow from its deployment's Run button in the Prefect UI, or "
                  "`ledgerflow reconcile payouts` for a reconciliation); delete the line: a later release refuses it")
_WARNED: set[str] = set()


def _warn_once(problem: Problem) -> None:
    """A deprecation, said once per process and place (flows are loaded again on every reload)."""
    text = str(problem)
    if text not in _WARNED:
        _WARNED.add(text)
        logging.getLogger("ledgerflow.spec").warning("%s", text)


def _schedule_problems(doc: Document, schedule: dict) -> list[Problem]:
    problems = []
    from datetime import datetime

    from cronsim import CronSim
    try:
        CronSim(schedule["cron"], datetime(2026, 1, 1))
    except Exception as exc:  # noqa: BLE001
        problems.append(doc.problem(("trigger", "schedule", "cron"), f"trigger.schedule.cron: {exc}"))
    tz = schedule.get("timezone")
    if tz:
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(tz)
        except Exception:  # noqa: BLE001
            problems.append(doc.problem(("trigger", "schedule", "timezone"),
                                        f"trigger.schedule.timezone: unknown time zone {tz!r}"))
    return problems


def iter_flow_files(paths: list[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*.y*ml") if x.suffix in (".yaml", ".yml")
                              and "tests" not in x.relative_to(p).parts))
        else:
            out.append(p)
    return out
