"""Hot reload: ``serve`` and ``worker`` take changed flows, mappings and ``ledgerflow.yaml``
without a restart.

A watcher (``ReloadWatcher``, a background service) compares a fingerprint of the
files (modification time in ns, size and inode of ``ledgerflow.yaml``, ``flows/**``,
``mappings/**`` and any mapping file a flow names elsewhere) every second. Once a
change has held still for one look (an editor saving in steps is not caught
half-way), ``App.reload()`` loads the whole new configuration and checks it as
``ledgerflow validate`` does:

* clean: it is swapped in at once (one reference; readers never see half of it),
  and one log line names what changed;
* not clean: refused. The running version stays, the problems are logged as
  ``file:line:col: message`` and sent to Slack once, and the watcher keeps
  looking: the next valid save is taken.

What a reload cannot change (see ``restart_problems`` and ``RESTART_NOTES``): the
store (``settings.store_url``/``state_dir``: refused, the message says to restart),
and what is set up once at start: the ``serve:`` section (host, port, Web
Connector listener, limits, intervals, Prefect port), a running delivery loop's
batch size, the connections' Prefect concurrency limits, and flow schedules
(Prefect deployments). Those are taken at the next restart, and the reload line
says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .errors import Problem
from .services import PeriodicService
from .spec import Flow, Project

log = logging.getLogger("ledgerflow.reload")

DEFAULT_INTERVAL = 1.0
# project-file parts read once at start: changed, they wait for the next restart
RESTART_NOTES = {
    "serve": "serve's listeners, limits and intervals",
    "settings.batch_size": "a running delivery loop's batch size",
    "settings.delivery_runs": "a running delivery loop's run structure (per_batch or long_lived)",
    "settings.state_dir": "the Prefect server's home and the state files",
}


# ---- what to watch ----------------------------------------------------------------------

def watched_files(project: Project, flows: dict[str, Flow] | None) -> list[Path]:
    """The project file, every YAML file under flows/ and mappings/, and mapping files flows name elsewhere."""
    files = {project.path or project.dir / "ledgerflow.yaml"}
    for sub in ("flows", "mappings"):
        folder = project.dir / sub
        if folder.is_dir():
            files.update(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml"))
    for flow in (flows or {}).values():
        for route in flow.raw.get("routes") or []:
            if isinstance(route, dict) and isinstance(route.get("mapping"), str):
                files.add(project.dir / route["mapping"])
    return sorted(files)


def fingerprint(files: list[Path]) -> dict[str, tuple[int, int, int]]:
    """path -> (mtime in ns, size, inode); a missing file is left out (its removal is a change)."""
    out = {}
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        out[str(f)] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


def changed_files(before: dict, after: dict, root: Path) -> list[str]:
    names = [k for k in before.keys() | after.keys() if before.get(k) != after.get(k)]
    return sorted(_relative(n, root) for n in names)


def _relative(name: str, root: Path) -> str:
    try:
        return str(Path(name).relative_to(root))
    except ValueError:
        return name


# ---- what a new version changes ------------------------------------------------------------

def restart_problems(old: Project, new: Project) -> list[Problem]:
    """Changes a running process refuses: the store it writes to."""
    if old.store_url == new.store_url:
        return []
    key = "store_url" if "store_url" in (new.raw.get("settings") or {}) or "store_url" in old.settings else "state_dir"
    line, col = new.doc.where(("settings", key))
    return [Problem(new.file, line, col, f"settings.{key}: the store cannot be switched while ledgerflow runs; "
                                         "restart serve and every worker to use the new one (until then they "
                                         "keep the store they opened)")]


def endpoint_problems(app: Any, old: Project, new: Project) -> list[Problem]:
    """Changed webhook endpoints must have secrets that resolve here (a missing env var, say)."""
    if (old.raw.get("stripe") or {}).get("endpoints") == (new.raw.get("stripe") or {}).get("endpoints"):
        return []
    from .stripe_config import stripe_settings
    try:
        stripe_settings(new.raw.get("stripe"), new.file).resolve_secrets(app.secrets)
    except Exception as exc:  # noqa: BLE001 - the resolver names the field; never the value
        line, col = new.doc.where(("stripe", "endpoints"))
        return [Problem(new.file, line, col, str(exc))]
    return []


def _section_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new), key=str):
        if old.get(key) != new.get(key):
            what = "added" if key not in old else "removed" if key not in new else "changed"
            out.append(f"{prefix}{key} {what}")
    return out


def project_changes(old: Project, new: Project) -> list[str]:
    out = []
    for section in ("settings", "connections"):
        out.extend(_section_changes(old.raw.get(section) or {}, new.raw.get(section) or {}, f"{section}."))
    others = {k: v for k, v in new.raw.items() if k not in ("settings", "connections")}
    before = {k: v for k, v in old.raw.items() if k not in ("settings", "connections")}
    out.extend(_section_changes(before, others))
    return [_with_note(c) for c in out]


def _with_note(change: str) -> str:
    for prefix, what in RESTART_NOTES.items():
        if change == prefix or change.startswith((prefix + " ", prefix + ".")):
            return f"{change} ({what}: at the next restart)"
    return change


def _flow_state(flow: Flow) -> tuple:
    return flow.raw, [r.mapping.doc.data if r.mapping is not None else None for r in flow.routes]


def flow_changes(old: dict[str, Flow] | None, new: dict[str, Flow]) -> list[str]:
    if old is None:
        return [f"{len(new)} flow(s) loaded"]
    out = [f"flow {n} added" for n in sorted(new.keys() - old.keys())]
    out += [f"flow {n} removed" for n in sorted(old.keys() - new.keys())]
    for name in sorted(new.keys() & old.keys()):
        if _flow_state(old[name]) != _flow_state(new[name]):
            note = " (its schedule: at the next restart)" if old[name].schedule != new[name].schedule else ""
            out.append(f"flow {name} changed{note}")
    return out


def describe_changes(old: Any, project: Project, flows: dict[str, Flow]) -> list[str]:
    """What the new version changes, in words (empty: nothing that matters, comments say)."""
    return project_changes(old.project, project) + flow_changes(old.flows, flows)


# ---- following a reload ------------------------------------------------------------------------

def follow_endpoints(app: Any, receiver: Any, *, watch: bool = False) -> ReloadWatcher | None:
    """Keep the webhook receiver's paths and signing secrets in step with ``stripe.endpoints``
    (rotating a signing secret needs no restart). ``watch``: a receiver that runs no background
    services (``serve --no-background``, receivers 1..N-1 of ``--workers N``) gets a watcher of
    its own, which logs a refused edit but leaves the Slack alert to the process that runs them."""
    from .stripe_config import stripe_settings

    def apply(old: Any, new: Any) -> None:
        if (old.project.raw.get("stripe") or {}) == (new.project.raw.get("stripe") or {}):
            return
        settings = stripe_settings(new.project.raw.get("stripe"), new.project.file)
        settings.resolve_secrets(app.secrets)
        receiver.configure(settings)
        log.info("webhook endpoints now: %s", ", ".join(sorted(receiver.paths)))

    app.on_reload(apply)
    return ReloadWatcher(app, process="serve receiver", alert=False) if watch else None


# ---- the watcher ---------------------------------------------------------------------------------

class ReloadWatcher(PeriodicService):
    """Every ``interval`` seconds: did the configuration files change? Then reload (see the module)."""

    name = "config-watcher"

    def __init__(self, app: Any, interval: float = DEFAULT_INTERVAL, *, process: str = "serve", alert: bool = True):
        super().__init__(interval)
        self.app = app
        self.process = process
        self.alert = alert
        self._running = self._look()       # the files of the version in use
        self._pending: dict | None = None  # a change seen once, waiting to hold still
        self._refused: dict | None = None  # the files of the last refused version

    def _look(self) -> dict:
        config = self.app.config
        return fingerprint(watched_files(config.project, config.flows))

    def run_pass(self) -> bool:
        self.app.close_retired()
        now = self._look()
        if now == self._running or now == self._refused:
            self._pending = None
            return False
        if now != self._pending:          # changed since the last look: let the save finish
            self._pending = now
            return False
        self._pending = None
        self.check(now)
        return False

    def check(self, now: dict) -> None:
        files = ", ".join(changed_files(self._running, now, self.app.project.dir))
        result = self.app.reload(files)              # logs what changed when it is applied
        if result.problems:
            self._refused = now
            self.refused(files, result.problems)
            return
        self._running, self._refused = now, None
        if not result.changes:
            log.info("configuration files saved (%s); the running configuration already matches them", files)

    def refused(self, files: str, problems: list[Problem]) -> None:
        listing = "\n".join(str(p) for p in problems)
        log.error("configuration change refused (%s); still running the previous version. %d problem(s):\n%s",
                  files, len(problems), listing)
        if not self.alert:
            return
        from .alerts import alert_config_refused
        try:
            alert_config_refused(self.app, problems, files=files, process=self.process)
        except Exception:  # noqa: BLE001 - the refusal is logged whatever Slack does
            log.exception("could not send the refused-configuration alert")


def background(app: Any, process: str = "serve") -> ReloadWatcher:
    """serve_hooks.BACKGROUND entry (and ``ledgerflow worker``): the configuration watcher."""
    return ReloadWatcher(app, process=process)
