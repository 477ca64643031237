"""What a hot reload compares (runner/operate/reload.py watches and swaps): the files a configuration
reads and their fingerprint, what changed between two versions of the project and its flows, in
words, and what a reload cannot take (``restart_problems``, ``RESTART_NOTES``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runner.core.errors import Problem
from runner.language.spec import Flow, Project

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
    from runner.language.stripe_config import stripe_settings
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
