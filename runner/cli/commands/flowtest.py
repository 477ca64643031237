"""test: run flow test cases (fixtures in, expected operations out)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="run flow test cases through the planner, sending nothing; exit 1 on any failure",
                       description="Run flow test cases (flows/tests/*.yaml and flows' own tests: sections) "
                                   "through the same planner as preview. Nothing is sent.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="test files, flow files or folders (default: flows/)")
    p.add_argument("-k", dest="select", metavar="TEXT", help="only cases whose name contains TEXT")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    p.add_argument("--update", action="store_true",
                   help="rewrite the expectations of failing cases from the current output (shows the diff first)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.set_defaults(func=cmd_test)


def cmd_test(args) -> int:
    import sys
    from pathlib import Path

    from runner.app import App
    from runner.language.flowtest.execute import run_case
    from runner.language.flowtest.load import FlowIndex, load_all
    from runner.language.flowtest.report import case_lines, summary
    from runner.language.spec import find_project_file, load_project

    project = load_project(find_project_file(Path(args.paths[0]) if args.paths else None))
    paths = args.paths or [str(project.dir / "flows")]
    app = App(project)
    files, problems = load_all(paths, FlowIndex(project))
    for p in problems:
        print(f"ERROR {p}")
    results = []
    for tf in files:
        for p in tf.problems:
            print(f"ERROR {p}")
        for case in tf.cases:
            if args.select and args.select.lower() not in case.name.lower():
                continue
            result = run_case(app, case)
            results.append(result)
            if not (args.quiet and result.ok):
                print("\n".join(case_lines(result)))
    file_problems = len(problems) + sum(len(tf.problems) for tf in files)
    if not results and not file_problems:
        print(f"no test cases found in {', '.join(paths)} (flows/tests/*.yaml or a flow's tests: section)",
              file=sys.stderr)
        return 1
    if args.update:
        from runner.language.flowtest.load import load_test_file
        from runner.language.flowtest.update import update_files
        updated = update_files([r for r in results if r.status == "fail"], out=sys.stdout)
        if updated:   # run the rewritten files' cases again: the update must have repaired them
            index = FlowIndex(project)
            for i, tf in enumerate(files):
                if tf.source in updated:
                    files[i] = load_test_file(tf.source, tf.inline, index, tf.file)
            rerun = {(c.source, c.path): c for tf in files if tf.source in updated for c in tf.cases}
            for j, r in enumerate(results):
                fresh = rerun.get((r.case.source, r.case.path))
                if fresh is not None:
                    results[j] = run_case(app, fresh)
                    if not results[j].ok:
                        print("\n".join(["after --update:"] + case_lines(results[j])))
    if args.junit:
        from runner.language.flowtest.junit import write_junit
        write_junit(args.junit, files, results, problems)
    print(summary(results, file_problems))
    return 0 if all(r.ok for r in results) and not file_problems else 1
