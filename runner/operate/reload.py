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
from typing import Any

from runner.core.errors import Problem
from runner.core.services import PeriodicService
from runner.language.changes import (  # noqa: F401 - what a reload compares (runner/language/changes.py), re-exported
    RESTART_NOTES,
    changed_files,
    describe_changes,
    endpoint_problems,
    fingerprint,
    flow_changes,
    project_changes,
    restart_problems,
    watched_files,
)

log = logging.getLogger("ledgerflow.reload")

DEFAULT_INTERVAL = 1.0


# ---- following a reload ------------------------------------------------------------------------

def follow_endpoints(app: Any, receiver: Any, *, watch: bool = False) -> ReloadWatcher | None:
    """Keep the webhook receiver's paths and signing secrets in step with ``stripe.endpoints``
    (rotating a signing secret needs no restart). ``watch``: a receiver that runs no background
    services (``serve --no-background``, receivers 1..N-1 of ``--workers N``) gets a watcher of
    its own, which logs a refused edit but leaves the Slack alert to the process that runs them."""
    from runner.language.stripe_config import stripe_settings

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
        from runner.deliver.alerts import alert_config_refused
        try:
            alert_config_refused(self.app, problems, files=files, process=self.process)
        except Exception:  # noqa: BLE001 - the refusal is logged whatever Slack does
            log.exception("could not send the refused-configuration alert")


def background(app: Any, process: str = "serve") -> ReloadWatcher:
    """serve_hooks.BACKGROUND entry (and ``ledgerflow worker``): the configuration watcher."""
    return ReloadWatcher(app, process=process)
