"""``ledgerflow validate``: every problem in flows, mappings and the project file.

``check_project`` runs the same checks over a whole project and hands back the
loaded flows too: hot reload (``runner.operate.reload``) takes a configuration only
when it passes exactly what ``ledgerflow validate`` would pass.
"""

from __future__ import annotations

from pathlib import Path

from runner.core.errors import Problem, SpecError
from runner.language.spec import (
    MAPPINGS,
    PROJECT_FILE,
    Flow,
    Project,
    _display,
    find_project_file,
    iter_flow_files,
    load_flow,
    load_project,
)


def _kind(path: Path) -> str:
    if path.name == PROJECT_FILE:
        return "project"
    if "mappings" in path.parts:
        return "mapping"
    return "flow"


def _project_targets(project: Project) -> list[str]:
    targets = [project.dir / "flows", project.dir / "mappings"]
    return [str(t) for t in targets if t.exists()]


def _expand(targets: list[str], problems: list[Problem]) -> list[Path]:
    files: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            files.extend(x for x in sorted(p.rglob("*")) if x.suffix in (".yaml", ".yml") and x.is_file()
                         and p / "tests" not in x.parents)
        elif p.exists():
            files.append(p)
        else:
            problems.append(Problem(str(t), 1, 1, "no such file or folder"))
    return files


def _check_files(files: list[Path], project: Project, problems: list[Problem]) -> list[Flow]:
    """Load every file (problems collected), then check the flows together; the flows loaded."""
    flows = []
    for f in files:
        kind = _kind(f)
        try:
            if kind == "project":
                load_project(f)
            elif kind == "mapping":      # on its own: charge, payout, ... are known by name
                from runner.language.stripe_fields import mapping_problems
                problems.extend(mapping_problems(MAPPINGS.get(f, _display(f), project.env())))
            else:
                flows.append(load_flow(f, project))
        except SpecError as exc:
            problems.extend(exc.problems)
    if flows:
        from runner.language.posting.overlap import account_books_problems, overlap_problems  # one booking per movement
        problems.extend(overlap_problems(flows))                                # per set of books
        problems.extend(account_books_problems(project, flows))
    return flows


def validate_paths(paths: list[str] | None) -> tuple[list[Problem], int]:
    problems: list[Problem] = []
    start = Path(paths[0]) if paths else None
    project_file = find_project_file(start)
    try:
        project = load_project(project_file)
    except SpecError as exc:
        return exc.problems, 1
    files = _expand(paths or _project_targets(project), problems)
    _check_files(files, project, problems)
    return sorted(set(problems)), 1 + len(files)


def check_project(project_file: str | Path) -> tuple[Project | None, dict[str, Flow], list[Problem]]:
    """The whole project as ``ledgerflow validate`` checks it: (project, flows by name, problems).

    Only the flow files the runtime loads count as flows (``flows/tests`` is for flow tests);
    two flows with one name are a problem here, as they stop ``App.flows()``."""
    try:
        project = load_project(project_file)
    except SpecError as exc:
        return None, {}, exc.problems
    problems: list[Problem] = []
    files = _expand(_project_targets(project), problems)
    loaded = _check_files(files, project, problems)
    runtime = {p.resolve() for p in iter_flow_files([project.dir / "flows"])}
    flows: dict[str, Flow] = {}
    for f in loaded:
        if f.path not in runtime:
            continue
        if f.name in flows:
            problems.append(Problem(f.file, *f.doc.where(("name",)),
                                    f"name: flow name {f.name!r} is also used by {flows[f.name].file}"))
            continue
        flows[f.name] = f
    return project, flows, sorted(set(problems))
