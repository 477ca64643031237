"""One loaded ``App`` per project file in a process: a Prefect flow run started in this process
(a delivery batch, a payout's reconciliation) uses the App its caller already loaded (the
worker's, the dispatcher's) instead of loading the project again."""

from __future__ import annotations

from runner.app import App

_APPS: dict[str | None, App] = {}


def register_app(app: App) -> str | None:
    """Let flows in this process use an already loaded App; the key they find it by."""
    key = str(app.project.path) if app.project.path else None
    _APPS[key] = app
    return key


def app_for(project_file: str | None) -> App:
    """The App registered for ``project_file``, else the project loaded (and kept) now."""
    if project_file not in _APPS:
        from runner.language.spec import load_project
        _APPS[project_file] = App(load_project(project_file))
    return _APPS[project_file]
