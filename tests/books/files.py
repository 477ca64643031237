"""The IIF and CSV files a project wrote, read back as double-entry transactions.

Written from the formats themselves, not from ledgerflow's writers:

* IIF (Intuit's Interchange Format, QuickBooks Desktop): tab-separated lines; a line
  starting with ``!`` declares the columns of the record type named in its first cell
  (``!TRNS``, ``!SPL``, ``!ENDTRNS``); a transaction is one ``TRNS`` line, its ``SPL``
  lines and ``ENDTRNS``. ``AMOUNT`` is signed (debit > 0, credit < 0) and the lines of a
  transaction must sum to zero; ``DATE`` is MM/DD/YYYY; ``DOCNUM``, ``MEMO``, ``ACCNT``.
* CSV in QuickBooks Online's journal-entry import layout: a header row, then one row per
  line with ``Journal No.``, ``Journal Date`` (MM/DD/YYYY), ``Account Name``, ``Debits``,
  ``Credits``, ``Description``; consecutive rows with the same Journal No. are one entry.
  Other CSV files (bank-line layouts) are not journals and are reported, not read.

Each transaction becomes a :class:`tests.standins.ledger.JournalTxn` whose postings are
the file's amounts as they are (home currency: neither format carries a currency).
"""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from tests.standins.ledger import JournalTxn, Posting


class FileFormatError(ValueError):
    pass


def _date(text: str, where: str) -> str:
    try:
        return datetime.strptime(text.strip(), "%m/%d/%Y").date().isoformat()
    except ValueError:
        raise FileFormatError(f"{where}: date {text!r} is not MM/DD/YYYY") from None


def _amount(text: str, where: str) -> Decimal:
    try:
        return Decimal(text.strip().replace(",", ""))
    except InvalidOperation:
        raise FileFormatError(f"{where}: amount {text!r} is not a number") from None


def read_iif(path: Path) -> list[JournalTxn]:
    """Every TRNS/SPL/ENDTRNS block of one IIF file."""
    columns: dict[str, list[str]] = {}
    out: list[JournalTxn] = []
    current: JournalTxn | None = None
    text = Path(path).read_text(encoding="utf-8")
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        cells = raw.split("\t")
        where = f"{Path(path).name}:{n}"
        kind = cells[0]
        if kind.startswith("!"):
            columns[kind[1:]] = cells[1:]
            continue
        if kind == "ENDTRNS":
            if current is None:
                raise FileFormatError(f"{where}: ENDTRNS without TRNS")
            out.append(current)
            current = None
            continue
        if kind not in ("TRNS", "SPL"):
            raise FileFormatError(f"{where}: unknown record {kind!r}")
        if kind not in columns:
            raise FileFormatError(f"{where}: {kind} before its !{kind} header")
        row = dict(zip(columns[kind], cells[1:]))
        if kind == "TRNS":
            if current is not None:
                raise FileFormatError(f"{where}: TRNS inside an open transaction (no ENDTRNS)")
            current = JournalTxn(id=f"{Path(path).name}:{n}", date=_date(row.get("DATE", ""), where),
                                 doc_type=f"IIF {row.get('TRNSTYPE', '')}".strip(), memo=row.get("MEMO", ""),
                                 doc_number=row.get("DOCNUM") or None)
        elif current is None:
            raise FileFormatError(f"{where}: SPL outside a transaction")
        current.postings.append(Posting(row.get("ACCNT", ""), _amount(row.get("AMOUNT", ""), where)))
        if kind == "SPL" and row.get("MEMO") and row.get("MEMO") not in current.memo:
            current.memo += " | " + row["MEMO"]
    if current is not None:
        raise FileFormatError(f"{Path(path).name}: transaction without ENDTRNS at the end of the file")
    return out


JOURNAL_COLUMNS = ("Journal No.", "Journal Date", "Account Name", "Debits", "Credits")


def read_csv_journal(path: Path) -> list[JournalTxn]:
    """One entry per run of consecutive rows with the same Journal No."""
    out: list[JournalTxn] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in JOURNAL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise FileFormatError(f"{Path(path).name}: not a journal-entry import file (no {missing})")
        current: JournalTxn | None = None
        for n, row in enumerate(reader, 2):
            where = f"{Path(path).name}:{n}"
            number = row["Journal No."]
            if current is None or current.doc_number != number:
                current = JournalTxn(id=where, date=_date(row["Journal Date"], where), doc_type="CSV journal",
                                     memo=row.get("Description") or "", doc_number=number)
                out.append(current)
            debit, credit = (row.get("Debits") or "").strip(), (row.get("Credits") or "").strip()
            if bool(debit) == bool(credit):
                raise FileFormatError(f"{where}: a line needs exactly one of Debits/Credits")
            amount = _amount(debit, where) if debit else -_amount(credit, where)
            current.postings.append(Posting(row["Account Name"], amount))
            desc = row.get("Description") or ""
            if desc and desc not in current.memo:
                current.memo += " | " + desc
    return out


def iif_books(directory: Path) -> list[JournalTxn]:
    return [t for p in sorted(Path(directory).glob("*.iif")) for t in read_iif(p)]


def csv_books(directory: Path) -> tuple[list[JournalTxn], list[Path]]:
    """(journal entries, CSV files that are not journal-entry files)."""
    txns, other = [], []
    for p in sorted(Path(directory).glob("*.csv")):
        try:
            txns += read_csv_journal(p)
        except FileFormatError:
            other.append(p)
    return txns, other
