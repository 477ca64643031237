"""Generate runner/language/_stripe_objects.py: the fields of every Stripe object, read from the
stripe SDK's typed resource classes, and the object each event type carries.

``ledgerflow validate`` checks that a template reads fields Stripe's objects have
(``charge.amout`` -> did you mean ``amount``?). Importing the SDK to read its
annotations costs about a second, so the fields are written out once here;
tests/test_stripe_fields.py fails when the installed SDK says otherwise (an SDK
upgrade). Regenerate with:

    .venv/bin/python scripts/stripe_objects.py

Field codes in the output (see runner/language/stripe_fields.py): "_" a scalar, "*" free-form
(metadata, untyped), "[X]" a list of X, "{X}" a Stripe list object of X, a type key
(an object name like ``charge``, or ``charge/BillingDetails.Address`` for a nested
class), and "A|B" either (an expandable field is "_|balance_transaction": an id or
the object).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "runner" / "language" / "_stripe_objects.py"
SCALARS = (str, int, float, bool, type(None))


class Walker:
    """Turns the SDK's classes into {type key: "Display field:code ..."}."""

    def __init__(self):
        from stripe._object_classes import OBJECT_CLASSES
        self.classes = {name: (module, cls) for name, (module, cls) in OBJECT_CLASSES.items()}
        self.by_class: dict[tuple[str, str], str] = {}
        for name, (module, cls) in OBJECT_CLASSES.items():
            self.by_class.setdefault((module, cls), name)   # "file" before its alias "file_upload"
        self.types: dict[str, str] = {}
        self.nested: dict[type, str] = {}

    def run(self) -> dict[str, str]:
        for name, (module, cls) in sorted(self.classes.items()):
            if name in ("list", "search_result", "file_upload"):
                continue
            klass = getattr(importlib.import_module(module), cls)
            self.add(name, klass, klass.__name__)
        return dict(sorted(self.types.items()))

    def add(self, key: str, klass: type, display: str) -> None:
        fields = []
        for field, annotation in sorted(own_annotations(klass).items()):
            code = self.code(annotation, klass, key)
            fields.append(field if code == "_" else f"{field}:{code}")
        self.types[key] = " ".join([display, *fields])

    def code(self, annotation, owner: type, owner_key: str) -> str:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if annotation in SCALARS or origin is typing.Literal:
            return "_"
        if origin is typing.Union:
            codes = sorted({self.code(a, owner, owner_key) for a in args if a is not type(None)})
            return "*" if "*" in codes else "|".join(codes)
        if origin in (list, typing.List) and args:
            return f"[{self.code(args[0], owner, owner_key)}]"
        if isinstance(origin, type) and origin.__name__ in ("ListObject", "SearchResultObject") and args:
            return "{" + self.code(args[0], owner, owner_key) + "}"
        if isinstance(annotation, (str, typing.ForwardRef)):
            return self.resolve(annotation if isinstance(annotation, str) else annotation.__forward_arg__, owner)
        if isinstance(annotation, type) and annotation.__module__.startswith("stripe"):
            return self.class_code(annotation, owner_key)
        return "*"   # Dict, Any, UntypedStripeObject (metadata): any key

    def class_code(self, klass: type, owner_key: str) -> str:
        key = self.by_class.get((klass.__module__, klass.__name__))
        if key is not None and "." not in klass.__qualname__:
            return key
        if not hasattr(klass, "__annotations__") or "." not in klass.__qualname__:
            return "*"
        if klass not in self.nested:
            top = owner_key.split("/")[0]
            nested_key = f"{top}/{klass.__qualname__.split('.', 1)[1]}"
            self.nested[klass] = nested_key
            self.add(nested_key, klass, klass.__qualname__)
        return self.nested[klass]

    def resolve(self, name: str, owner: type) -> str:
        """A forward reference: the class the owner's module imports under that name."""
        module = inspect.getmodule(owner)
        target = module_imports(module.__name__).get(name)
        key = self.by_class.get(target) if target else None
        if key is not None:
            return key
        if isinstance(getattr(module, name, None), type):
            return self.class_code(getattr(module, name), "")
        return "*"


@functools.lru_cache(maxsize=None)
def module_imports(module_name: str) -> dict[str, tuple[str, str]]:
    """{name as used in the module: (module, class)} from its ``from stripe... import`` lines
    (the resource classes are imported under TYPE_CHECKING, so only the source says)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    return {alias.asname or alias.name: (node.module, alias.name)
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names}


def own_annotations(klass: type) -> dict:
    """Field annotations of the class and its Stripe bases (not StripeObject's internals)."""
    out: dict = {}
    for base in reversed(klass.__mro__):
        for field, annotation in base.__dict__.get("__annotations__", {}).items():
            if not field.startswith("_") and typing.get_origin(annotation) is not typing.ClassVar:
                out[field] = annotation
    return out


def event_objects(walker: Walker) -> dict[str, str]:
    """Each event type -> the object its data.object is ("" when the SDK does not say:
    account.external_account.* carries a card or a bank account)."""
    import stripe
    import stripe.events

    out = {t: "" for t in typing.get_args(stripe.Event.__annotations__["type"])}
    for info in pkgutil.iter_modules(stripe.events.__path__):
        if not info.name.startswith("_v1_"):
            continue
        module = importlib.import_module(f"stripe.events.{info.name}")
        for name, cls in vars(module).items():
            fetch = getattr(cls, "fetch_related_object", None)
            if name.endswith("EventNotification") and fetch is not None:
                returned = fetch.__annotations__.get("return")
                code = walker.resolve(returned, cls) if isinstance(returned, str) else "*"
                out[cls.LOOKUP_TYPE[len("v1."):]] = code if code in walker.types else ""
    return dict(sorted(out.items()))


def generate() -> str:
    import stripe
    walker = Walker()
    types = walker.run()
    events = event_objects(walker)
    lines = [f'"""Generated by scripts/stripe_objects.py from stripe {stripe.VERSION}. Do not edit."""',
             "# fmt: off", f"SDK_VERSION = {stripe.VERSION!r}", "", "TYPES = {"]
    lines += [f"    {k!r}: {v!r}," for k, v in types.items()]
    lines += ["}", "", "EVENTS = {"]
    lines += [f"    {k!r}: {v!r}," for k, v in events.items()]
    lines += ["}", ""]
    return "\n".join(lines)


def main() -> None:
    OUT.write_text(generate())
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
