"""JUnit XML for CI systems: one <testsuite> per test file, one <testcase> per case."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from runner.core.errors import Problem
from runner.language.flowtest.model import Result, TestFile
from runner.language.flowtest.report import case_lines


def write_junit(path: str | Path, files: list[TestFile], results: list[Result], problems: list[Problem]) -> None:
    by_file: dict[str, list[Result]] = {}
    for r in results:
        by_file.setdefault(r.case.file, []).append(r)
    root = ET.Element("testsuites", name="ledgerflow test")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    orphan = [Problem(p.file, p.line, p.col, p.message) for p in problems]
    for tf in files:
        suite_results = by_file.get(tf.file, [])
        suite = ET.SubElement(root, "testsuite", name=tf.file)
        counts = {"tests": 0, "failures": 0, "errors": 0}
        for p in tf.problems:   # the file itself could not be read
            tc = ET.SubElement(suite, "testcase", name="(file)", classname=tf.file, file=tf.file, line=str(p.line))
            ET.SubElement(tc, "error", message=p.message).text = str(p)
            counts["tests"] += 1
            counts["errors"] += 1
        for r in suite_results:
            case = r.case
            tc = ET.SubElement(suite, "testcase", name=case.name,
                               classname=case.flow.name if case.flow is not None else tf.file,
                               file=case.file, line=str(case.line), time=f"{r.seconds:.6f}")
            counts["tests"] += 1
            if r.status != "pass":
                kind = "failure" if r.status == "fail" else "error"
                counts["failures" if kind == "failure" else "errors"] += 1
                detail = "\n".join(case_lines(r)[1:])
                first = detail.strip().splitlines()[0] if detail.strip() else r.status
                ET.SubElement(tc, kind, message=first).text = detail
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    if orphan:
        suite = ET.SubElement(root, "testsuite", name="(paths)", tests=str(len(orphan)), failures="0",
                              errors=str(len(orphan)))
        for p in orphan:
            tc = ET.SubElement(suite, "testcase", name=p.file, classname="(paths)")
            ET.SubElement(tc, "error", message=p.message).text = str(p)
        totals["tests"] += len(orphan)
        totals["errors"] += len(orphan)
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
