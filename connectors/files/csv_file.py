"""CSV target: a file per day per connection and action, atomic appends, no key written twice.

A ``journal`` operation writes all its rows (one per line) as one chunk under one
key: an entry is in the file whole or not at all."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from pathlib import Path

from connectors.base import Connector, ErrorKind, Item, Outcome, TargetError

from . import balanced
from .csv_actions import ACTIONS, JOURNAL_COLUMNS, QBO_BANK
from .ledger import KeyedFile, file_day


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


class CsvConnector(Connector):
    """Config: ``directory`` (relative to the project), optional ``prefix``."""

    type = "csv"
    actions = ACTIONS

    def _file_for(self, item: Item) -> KeyedFile:
        action = item.action
        today = file_day(item.created_at, self.runtime.settings.get("timezone", "UTC"))
        directory = Path(self.runtime.project_dir) / self.config.get("directory", f"out/{self.name}")
        prefix = self.config.get("prefix", self.name)
        return KeyedFile(directory / f"{prefix}-{action}-{today}.csv")

    def _journal(self, item: Item) -> tuple[list[str], list[list[str]]]:
        payload = item.payload
        problems = balanced(payload)
        if problems:
            raise TargetError("; ".join(problems), ErrorKind.PERMANENT, field="lines")
        d = date.fromisoformat(str(payload["date"])).strftime("%m/%d/%Y")
        rows = []
        for line in payload["lines"]:
            amount = Decimal(str(line["amount"]))
            debit = _cell(amount) if amount > 0 else ""
            credit = _cell(-amount) if amount < 0 else ""
            rows.append([_cell(payload["number"]), d, _cell(line["account"]), debit, credit,
                         _cell(line.get("memo") or payload.get("memo")), _cell(line.get("name"))])
        return list(JOURNAL_COLUMNS), rows

    def _row(self, item: Item) -> tuple[list[str], list[str]]:
        payload = item.payload
        if item.action == "qbo_bank_row":
            columns = list(QBO_BANK["properties"])
            d = date.fromisoformat(str(payload["Date"]))
            values = [d.strftime("%m/%d/%Y"), _cell(payload["Description"]), _cell(payload["Amount"])]
            return columns, values
        columns = list(payload)
        return columns, [_cell(payload[c]) for c in columns]

    def deliver(self, items: list[Item]) -> list[Outcome]:
        by_file: dict[Path, tuple[KeyedFile, list[str] | None, list[tuple[Item, bytes]]]] = {}
        outcomes: dict[int, Outcome] = {}
        for item in items:
            if item.action not in ACTIONS:
                outcomes[item.delivery_id] = Outcome.failed(item, TargetError(
                    f"csv has no action {item.action!r}", ErrorKind.PERMANENT))
                continue
            kf = self._file_for(item)
            try:
                if item.action == "journal":
                    columns, rows = self._journal(item)
                else:
                    columns, values = self._row(item)
                    rows = [values]
            except TargetError as exc:
                outcomes[item.delivery_id] = Outcome.failed(item, exc)
                continue
            except (KeyError, ValueError, ArithmeticError) as exc:
                outcomes[item.delivery_id] = Outcome.failed(item, TargetError(
                    f"payload cannot be written as CSV: {exc}", ErrorKind.PERMANENT))
                continue
            entry = by_file.setdefault(kf.path, (kf, columns, []))
            if entry[1] != columns:
                outcomes[item.delivery_id] = Outcome.failed(item, TargetError(
                    f"columns {columns} differ from this file's columns {entry[1]}; a CSV file has one layout "
                    "per action — give the mapping the same fields in the same order", ErrorKind.PERMANENT))
                continue
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\r\n").writerows(rows)
            entry[2].append((item, buf.getvalue().encode("utf-8")))
        for kf, columns, rows in by_file.values():
            def header(columns=columns) -> bytes:
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\r\n").writerow(columns)
                return buf.getvalue().encode("utf-8")
            try:
                written = kf.append([(it.idempotency_key, chunk) for it, chunk in rows], header=header)
            except OSError as exc:
                for it, _ in rows:
                    outcomes[it.delivery_id] = Outcome.failed(it, TargetError(f"cannot write {kf.path}: {exc}"))
                continue
            for it, _ in rows:
                outcomes[it.delivery_id] = Outcome.sent(it, f"{kf.path.name}#{it.idempotency_key}",
                                                        duplicate=not written[it.idempotency_key])
        return [outcomes[i.delivery_id] for i in items]
