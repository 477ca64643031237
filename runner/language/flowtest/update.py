"""``ledgerflow test --update``: rewrite failing cases' expectations from the current output.

Snapshot style, but only the expected parts: a subset expectation keeps its
fields (with new values), an exact one takes the whole payload, a route that
now fires gets an entry, one that no longer fires loses its entry. The file
is edited in place with ruamel.yaml's round-trip mode, so comments, key
order, quoting and flow style survive; the unified diff is printed first.
"""

from __future__ import annotations

import difflib
import io
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from runner.language.flowtest.compare import same_value
from runner.language.flowtest.model import ExpectedOp, Result


def _yaml(text: str):
    from ruamel.yaml import YAML
    from ruamel.yaml.representer import RoundTripRepresenter

    class Representer(RoundTripRepresenter):
        pass

    def decimal(rep, value: Decimal):
        s = format(value, "f")
        return rep.represent_scalar("tag:yaml.org,2002:float" if "." in s else "tag:yaml.org,2002:int", s)

    Representer.add_representer(Decimal, decimal)
    y = YAML()
    y.Representer = Representer
    y.preserve_quotes = True
    y.width = 4096
    y.brace_single_entry_mapping_in_flow_sequence = True   # keep [{Amount: 1}] as written
    mapping, sequence, offset = _indent(text)
    y.indent(mapping=mapping, sequence=sequence, offset=offset)
    return y


def _indent(text: str) -> tuple[int, int, int]:
    """The file's block sequence style: ``- `` under its key, or indented by two."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        m = re.match(r"^(\s*)[^\s#-][^:#]*:\s*(#.*)?$", line)
        nxt = re.match(r"^(\s*)- ", lines[i + 1])
        if m and nxt:
            offset = len(nxt.group(1)) - len(m.group(1))
            return (2, 2, 0) if offset <= 0 else (2, offset + 2, offset)
    return 2, 4, 2


def _node(value: Any) -> Any:
    """A plain value as ruamel round-trip nodes (block style)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    if isinstance(value, dict):
        m = CommentedMap()
        for k, v in value.items():
            m[k] = _node(v)
        return m
    if isinstance(value, list):
        s = CommentedSeq()
        s.extend(_node(v) for v in value)
        return s
    return value


def _scalar(old: Any, new: Any) -> Any:
    """Keep the user's own writing when it is equal; keep quoting style when it is not."""
    if same_value(_plain_scalar(old), new):
        return old
    if isinstance(old, str) and type(old) is not str and isinstance(new, (Decimal, int)) and not isinstance(new, bool):
        return type(old)(format(new, "f") if isinstance(new, Decimal) else str(new))
    return _node(new)


def _plain_scalar(v: Any) -> Any:
    from runner.language.flowtest.compare import plain
    if type(v).__name__ == "ScalarFloat":
        return Decimal(str(v).strip())
    return plain(str(v) if isinstance(v, str) else v)


def _refresh(node: Any, actual: Any, exact: bool) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    if isinstance(node, CommentedMap) and isinstance(actual, dict):
        for k in list(node):
            if k not in actual:
                del node[k]
            else:
                node[k] = _refresh(node[k], actual[k], exact)
        if exact:
            for k, v in actual.items():
                if k not in node:
                    node[k] = _node(v)
        return node
    if isinstance(node, CommentedSeq) and isinstance(actual, list):
        for i in range(min(len(node), len(actual))):
            node[i] = _refresh(node[i], actual[i], exact)
        del node[len(actual):]
        node.extend(_node(v) for v in actual[len(node):])
        return node
    if isinstance(node, (CommentedMap, CommentedSeq)) or isinstance(actual, (dict, list)):
        return _node(actual)
    return _scalar(node, actual)


def _refresh_expect(seq: Any, expected: list[ExpectedOp], result: Result) -> Any:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    items: list[Any] = []
    used: set[int] = set()
    for op in result.operations:
        j = next((j for j, e in enumerate(expected) if j not in used and e.route == op.route), None)
        if j is None:
            items.append(CommentedMap([("route", op.route), ("payload", _node(op.payload))]))
            continue
        used.add(j)
        item = seq[j]
        if "payload" in item:
            item["payload"] = _refresh(item["payload"], op.payload, expected[j].exact)
        if "idempotency_key" in item:
            item["idempotency_key"] = _scalar(item["idempotency_key"], op.idempotency_key)
        items.append(item)
    if [id(x) for x in items] == [id(x) for x in seq]:
        return seq
    if not items:
        empty = CommentedSeq()
        empty.fa.set_flow_style()
        return empty
    del seq[:]
    seq.extend(items)
    if seq.fa.flow_style():
        seq.fa.set_block_style()
    return seq


def update_files(results: list[Result], out: TextIO) -> set[Path]:
    """Rewrite each failing case's expect:, file by file, printing each file's diff first."""
    by_file: dict[Path, list[Result]] = {}
    for r in results:
        if r.status == "fail" and r.case.error is None:
            by_file.setdefault(r.case.source, []).append(r)
    written: set[Path] = set()
    for path, file_results in by_file.items():
        text = path.read_text(encoding="utf-8")
        y = _yaml(text)
        data = y.load(text)
        for r in file_results:
            key, index = r.case.path
            case_node = data[key][index]
            case_node["expect"] = _refresh_expect(case_node["expect"], r.case.expect, r)
        buf = io.StringIO()
        y.dump(data, buf)
        new = buf.getvalue()
        if new == text:
            continue
        display = file_results[0].case.file
        out.write("".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                               f"{display} (before)", f"{display} (updated)")))
        path.write_text(new, encoding="utf-8")
        out.write(f"updated {display}: {len(file_results)} case(s)\n")
        written.add(path)
    return written
