"""YAML loading that remembers where every value came from.

PyYAML's composer gives node marks; we build plain Python values and a
``positions`` map from a path (tuple of keys/indexes) to (line, col), both
1-based, so every later error can point at the file, line and column.
Duplicate keys are errors rather than silent overwrites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.core.errors import Problem, SpecError

try:  # libyaml is much faster; fall back to the pure-Python loader
    _Base = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Base = yaml.SafeLoader


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """YAML 1.2 booleans: only true/false. In YAML 1.1 `on`, `off`, `yes`, `no`
    are booleans, which would turn a look-up's `on:` key into True."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _Base.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)

Path_ = tuple  # a path into a document: ("routes", 0, "mapping")


@dataclass
class Document:
    file: str
    data: Any
    positions: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    text: str = field(default="", repr=False)   # the source, for messages that quote it

    def where(self, path: tuple | list) -> tuple[int, int]:
        """Position of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, path: tuple | list, message: str) -> Problem:
        line, col = self.where(path)
        return Problem(self.file, line, col, message)

    def key_problem(self, path: tuple | list, message: str) -> Problem:
        """A problem about a mapping key itself (unknown key): points at the key."""
        line, col = self.key_positions.get(tuple(path)) or self.where(path)
        return Problem(self.file, line, col, message)


def _construct(node: yaml.Node, path: tuple, doc: Document, loader: yaml.Loader,
               problems: list[Problem]) -> Any:
    doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.MappingNode) and node.flow_style and key_node.flow_style:
                # `amount: {{ charge.amount }}`: YAML reads the braces as a mapping in a mapping
                line, col = node.start_mark.line + 1, node.start_mark.column + 1
                problems.append(Problem(doc.file, line, col, unquoted_template(doc.text, line, col)))
                return None
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                problems.append(Problem(doc.file, key_node.start_mark.line + 1,
                                        key_node.start_mark.column + 1,
                                        "mapping keys must be plain scalars"))
                continue
            if key in out:
                problems.append(Problem(doc.file, key_node.start_mark.line + 1,
                                        key_node.start_mark.column + 1,
                                        f"duplicate key {key!r}"))
                continue
            doc.key_positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = _construct(value_node, path + (key,), doc, loader, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), doc, loader, problems) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


_TEMPLATE_START = re.compile(r"(?:^|[:\-\[,]\s|\s-\s|^\s*-\s)\s*(\{[{%])")


def unquoted_template(text: str, line: int, col: int) -> str:
    """What to say about a template YAML read as a mapping (or could not read) at ``line``."""
    lines = text.splitlines()
    value = lines[line - 1][col - 1:] if 0 < line <= len(lines) else ""
    value = re.sub(r"\s+#.*$", "", value).strip() or "{{ ... }}"
    quoted = '"' + value + '"' if '"' not in value else "'" + value.replace("'", "''") + "'"
    return (f"a template must be quoted: YAML reads an unquoted {value[:2]} as the start of a mapping; "
            f"write {quoted}")


def _unquoted_template_at(text: str, *lines: int) -> tuple[int, int] | None:
    """The line and column of an unquoted ``{{``/``{%`` value on one of these (0-based) lines."""
    all_lines = text.splitlines()
    for n in lines:
        if 0 <= n < len(all_lines):
            m = _TEMPLATE_START.search(all_lines[n])
            if m and not set(all_lines[n][:m.start(1)]) & {'"', "'", "#"}:
                return n + 1, m.start(1) + 1
    return None


def load_text(text: str, file: str) -> Document:
    """Parse one YAML document; raise SpecError naming file:line:col on failure."""
    doc = Document(file=file, data=None, text=text)
    problems: list[Problem] = []
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                doc.data = _construct(node, (), doc, loader, problems)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        marks = [m.line for m in (exc.problem_mark, exc.context_mark) if m is not None]
        template = _unquoted_template_at(text, *marks)
        if template:
            raise SpecError([Problem(file, *template, unquoted_template(text, *template))]) from None
        raise SpecError([Problem(file, line, col, f"malformed YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem(file, 1, 1, f"malformed YAML: {exc}")]) from None
    if problems:
        raise SpecError(problems)
    return doc


def load_file(path: str | Path, display: str | None = None) -> Document:
    p = Path(path)
    name = display or str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(name, 1, 1, "file not found")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(name, 1, 1, f"not UTF-8 text: {exc.reason}")]) from None
    return load_text(text, name)
