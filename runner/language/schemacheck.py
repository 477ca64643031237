"""JSON Schema checks that stay fast on the happy path.

fastjsonschema compiles a schema to Python once per process and answers
"valid?" quickly; only when a document is invalid do we import jsonschema to
list every error with its path. ``ledgerflow validate`` on a clean project
never imports jsonschema, which keeps start-up well under half a second.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

_FAST: dict[int, Any] = {}


def _generated(schema: Mapping[str, Any]):
    """The pre-compiled validator for one of our own schemas, when it is fresh."""
    sid = schema.get("$id", "") if isinstance(schema, Mapping) else ""
    if not sid.startswith("https://ledgerflow.dev/schema/"):
        return None
    import hashlib
    import importlib
    import json
    name = sid.rsplit("/", 1)[-1].split(".")[0]
    try:
        module = importlib.import_module(f"runner.language._schema_validators.{name}")
    except ImportError:
        return None
    if module.DIGEST != hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest():
        return None
    return module.validate


def _fast(schema: Mapping[str, Any]):
    key = id(schema)
    if key not in _FAST:
        generated = _generated(schema)
        if generated is not None:
            _FAST[key] = (schema, generated)
            return generated
        import fastjsonschema
        try:
            _FAST[key] = (schema, fastjsonschema.compile(dict(schema), use_default=False))
        except Exception:  # noqa: BLE001 - a construct it cannot compile: always explain
            _FAST[key] = (schema, None)
    return _FAST[key][1]


def is_valid(schema: Mapping[str, Any], instance: Any) -> bool:
    fast = _fast(schema)
    if fast is None:
        return not any(True for _ in iter_errors(schema, instance))
    try:
        fast(instance)
        return True
    except Exception:  # noqa: BLE001 - JsonSchemaException, or a type it does not know
        return False


def iter_errors(schema: Mapping[str, Any], instance: Any) -> Iterator[Any]:
    """jsonschema's errors (each with absolute_path, message, validator, ...)."""
    from jsonschema import Draft202012Validator, FormatChecker
    return Draft202012Validator(schema, format_checker=FormatChecker()).iter_errors(instance)


def errors(schema: Mapping[str, Any], instance: Any) -> list[Any]:
    """Every error, or [] quickly when the instance is valid."""
    if is_valid(schema, instance):
        return []
    return list(iter_errors(schema, instance))


def resolve_ref(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """A local ``$ref`` ("#/$defs/...") followed, the node's sibling keywords merged over it."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return resolve_ref({**target, **{k: v for k, v in node.items() if k != "$ref"}}, root)
    return node
