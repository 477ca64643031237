"""IIF target: QuickBooks Desktop's tab-separated import, TRNS/SPL/ENDTRNS blocks.

A file per day per connection, MM/DD/YYYY dates, every block summing to zero,
atomic appends, no idempotency key written twice (see ledger.py)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from connectors.base import Connector, ErrorKind, Item, Outcome, TargetError

from . import balanced
from .iif_actions import ACTIONS
from .ledger import KeyedFile, file_day

COLUMNS = ["TRNSTYPE", "DATE", "ACCNT", "NAME", "CLASS", "AMOUNT", "DOCNUM", "MEMO"]
HEADER = ("!TRNS\t" + "\t".join(COLUMNS) + "\r\n"
          "!SPL\t" + "\t".join(COLUMNS) + "\r\n"
          "!ENDTRNS\r\n")


def _clean(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def render_block(action: str, payload: dict) -> str:
    d = date.fromisoformat(str(payload["date"])).strftime("%m/%d/%Y")
    docnum, memo = payload.get("docnum"), payload.get("memo")
    if action == "transfer":
        trnstype = "TRANSFER"
        amount = Decimal(str(payload["amount"]))
        lines = [{"account": payload["from_account"], "amount": -amount, "memo": memo},
                 {"account": payload["to_account"], "amount": amount, "memo": memo}]
    else:
        trnstype = "GENERAL JOURNAL"
        lines = payload["lines"]
        problems = balanced(payload)
        if problems:
            raise TargetError("; ".join(problems), ErrorKind.PERMANENT, field="lines")
    out = []
    for i, line in enumerate(lines):
        tag = "TRNS" if i == 0 else "SPL"
        cells = [trnstype, d, line["account"], line.get("name"), line.get("class"), line["amount"], docnum,
                 line.get("memo", memo)]
        out.append(tag + "\t" + "\t".join(_clean(c) for c in cells))
    out.append("ENDTRNS")
    return "\r\n".join(out) + "\r\n"


class IifConnector(Connector):
    """Config: ``directory`` (relative to the project), optional ``prefix``."""

    type = "iif"
    actions = ACTIONS

    def _file(self, item: Item) -> KeyedFile:
        today = file_day(item.created_at, self.runtime.settings.get("timezone", "UTC"))
        directory = Path(self.runtime.project_dir) / self.config.get("directory", f"out/{self.name}")
        return KeyedFile(directory / f"{self.config.get('prefix', self.name)}-{today}.iif")

    def deliver(self, items: list[Item]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        entries = []
        for item in items:
            try:
                if item.action not in ACTIONS:
                    raise TargetError(f"iif has no action {item.action!r}", ErrorKind.PERMANENT)
                entries.append((item, render_block(item.action, item.payload).encode("utf-8")))
            except TargetError as exc:
                outcomes[item.delivery_id] = Outcome.failed(item, exc)
            except (KeyError, ValueError) as exc:
                outcomes[item.delivery_id] = Outcome.failed(item, TargetError(
                    f"payload cannot be written as IIF: {exc}", ErrorKind.PERMANENT))
        by_file: dict[Path, tuple[KeyedFile, list]] = {}
        for it, chunk in entries:
            kf = self._file(it)
            by_file.setdefault(kf.path, (kf, []))[1].append((it, chunk))
        for kf, group in by_file.values():
            try:
                written = kf.append([(it.idempotency_key, chunk) for it, chunk in group],
                                    header=lambda: HEADER.encode())
                for it, _ in group:
                    outcomes[it.delivery_id] = Outcome.sent(it, f"{kf.path.name}#{it.idempotency_key}",
                                                            duplicate=not written[it.idempotency_key])
            except OSError as exc:
                for it, _ in group:
                    outcomes[it.delivery_id] = Outcome.failed(it, TargetError(f"cannot write {kf.path}: {exc}"))
        return [outcomes[i.delivery_id] for i in items]
