"""``ledgerflow validate``: every problem in flows, mappings and the project file."""

from __future__ import annotations

from pathlib import Path

from .errors import Problem, SpecError
from .spec import MAPPINGS, PROJECT_FILE, _display, find_project_file, iter_flow_files, load_flow, load_project


def _kind(path: Path) -> str:
    if path.name == PROJECT_FILE:
        return "project"
    if "mappings" in path.parts:
        return "mapping"
    return "flow"


def validate_paths(paths: list[str] | None) -> tuple[list[Problem], int]:
    problems: list[Problem] = []
    start = Path(paths[0]) if paths else None
    project_file = find_project_file(start)
    try:
        project = load_project(project_file)
    except SpecError as exc:
        return exc.problems, 1
    if not paths:
        targets = [project.dir / "flows", project.dir / "mappings"]
        targets = [str(t) for t in targets if t.exists()]
    else:
        targets = paths
    files: list[Path] = []
    for t in targets:
        p = Path(t)
        if p.is_dir():
            files.extend(x for x in sorted(p.rglob("*")) if x.suffix in (".yaml", ".yml") and x.is_file()
                         and not (p / "tests" in x.parents))
        elif p.exists():
            files.append(p)
        else:
            problems.append(Problem(str(t), 1, 1, "no such file or folder"))
    counted = 1
    flows = []
    for f in files:
        counted += 1
        kind = _kind(f)
        try:
            if kind == "project":
                load_project(f)
            elif kind == "mapping":
                MAPPINGS.get(f, _display(f), project.env())
            else:
                flows.append(load_flow(f, project))
        except SpecError as exc:
            problems.extend(exc.problems)
    if flows:
        from .posting.overlap import account_books_problems, overlap_problems   # one booking per movement
        problems.extend(overlap_problems(flows))                                # per set of books
        problems.extend(account_books_problems(project, flows))
    return sorted(set(problems)), counted
