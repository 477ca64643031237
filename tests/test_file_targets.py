"""CSV and IIF targets: daily files, atomic writes, a key never written twice."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.base import ErrorKind, Item, Runtime
from connectors.files import ledger
from connectors.files.csv_file import CsvConnector
from connectors.files.iif import IifConnector


def runtime(tmp_path: Path) -> Runtime:
    return Runtime(project_dir=tmp_path, settings={"timezone": "Europe/Paris"})


def today() -> str:
    return datetime.now(ZoneInfo("Europe/Paris")).date().isoformat()


def bank_item(i: int, amount: str = "10.50") -> Item:
    return Item(i, f"key-{i}", "qbo_bank_row", {"Date": "2026-01-31", "Description": f"Stripe charge {i}, \"quoted\"",
                                                "Amount": Decimal(amount)})


def test_csv_qbo_bank_layout(tmp_path):
    c = CsvConnector("bank", {"directory": "out"}, runtime(tmp_path))
    outcomes = c.deliver([bank_item(1), bank_item(2, "-3.20")])
    assert all(o.ok for o in outcomes)
    path = tmp_path / "out" / f"bank-qbo_bank_row-{today()}.csv"
    assert path.read_bytes().decode() == ('Date,Description,Amount\r\n'
                                '01/31/2026,"Stripe charge 1, ""quoted""",10.50\r\n'
                                '01/31/2026,"Stripe charge 2, ""quoted""",-3.20\r\n')


def test_csv_same_key_is_not_written_again(tmp_path):
    c = CsvConnector("bank", {"directory": "out"}, runtime(tmp_path))
    c.deliver([bank_item(1)])
    again = c.deliver([bank_item(1), bank_item(1)])
    assert all(o.ok and o.detail["duplicate"] for o in again)
    path = tmp_path / "out" / f"bank-qbo_bank_row-{today()}.csv"
    assert path.read_bytes().decode().count("\r\n") == 2   # header + one row


def test_csv_free_layout_keeps_mapping_order_and_refuses_a_different_layout(tmp_path):
    c = CsvConnector("x", {"directory": "out"}, runtime(tmp_path))
    a = Item(1, "a", "row", {"id": "ch_1", "amount": Decimal("1.00"), "memo": None})
    b = Item(2, "b", "row", {"amount": Decimal("2.00"), "id": "ch_2"})
    oa, ob = c.deliver([a, b])
    assert oa.ok and not ob.ok and ob.error.kind == ErrorKind.PERMANENT
    assert "columns" in str(ob.error)
    assert (tmp_path / "out" / f"x-row-{today()}.csv").read_bytes().decode() == "id,amount,memo\r\nch_1,1.00,\r\n"


def test_iif_journal_and_transfer_blocks(tmp_path):
    c = IifConnector("qb", {"directory": "iif"}, runtime(tmp_path))
    journal = Item(1, "j1", "journal", {"date": "2026-02-03", "docnum": "ch_123", "memo": "refund\tof x",
                                         "lines": [{"account": "Sales Refunds", "amount": Decimal("25.00")},
                                                   {"account": "Stripe Clearing", "amount": Decimal("-25.00"),
                                                    "name": "Cust"}]})
    transfer = Item(2, "t1", "transfer", {"date": "2026-02-04", "from_account": "Stripe Clearing",
                                          "to_account": "Bank", "amount": Decimal("100.00")})
    assert all(o.ok for o in c.deliver([journal, transfer]))
    text = (tmp_path / "iif" / f"qb-{today()}.iif").read_bytes().decode()
    lines = text.split("\r\n")
    assert lines[0].split("\t") == ["!TRNS", "TRNSTYPE", "DATE", "ACCNT", "NAME", "CLASS", "AMOUNT", "DOCNUM", "MEMO"]
    assert lines[2] == "!ENDTRNS"
    assert lines[3].split("\t") == ["TRNS", "GENERAL JOURNAL", "02/03/2026", "Sales Refunds", "", "", "25.00",
                                    "ch_123", "refund of x"]
    assert lines[4].split("\t")[:7] == ["SPL", "GENERAL JOURNAL", "02/03/2026", "Stripe Clearing", "Cust", "", "-25.00"]
    assert lines[5] == "ENDTRNS"
    assert lines[6].split("\t")[:7] == ["TRNS", "TRANSFER", "02/04/2026", "Stripe Clearing", "", "", "-100.00"]
    assert lines[7].split("\t")[:7] == ["SPL", "TRANSFER", "02/04/2026", "Bank", "", "", "100.00"]
    # every block sums to zero
    block: list[Decimal] = []
    for line in lines[3:]:
        if line.startswith(("TRNS", "SPL")):
            block.append(Decimal(line.split("\t")[6]))
        elif line == "ENDTRNS":
            assert sum(block) == 0
            block = []


def test_iif_refuses_an_unbalanced_journal(tmp_path):
    c = IifConnector("qb", {"directory": "iif"}, runtime(tmp_path))
    bad = Item(1, "j", "journal", {"date": "2026-02-03", "lines": [{"account": "A", "amount": Decimal("1")},
                                                                    {"account": "B", "amount": Decimal("-0.99")}]})
    (o,) = c.deliver([bad])
    assert not o.ok and o.error.kind == ErrorKind.PERMANENT and "sum to zero" in str(o.error)
    assert not (tmp_path / "iif").exists() or not any((tmp_path / "iif").glob("*.iif"))


def test_crash_between_key_index_and_data_loses_nothing_and_repeats_nothing(tmp_path, monkeypatch):
    kf = ledger.KeyedFile(tmp_path / "f.csv")
    kf.append([("a", b"row a\n")], header=lambda: b"h\n")
    real = ledger.atomic_write
    calls = []

    def crash_on_data(path, data):
        calls.append(path)
        if path == kf.path:
            raise OSError("disk died")      # the sidecar landed, the data did not
        real(path, data)

    monkeypatch.setattr(ledger, "atomic_write", crash_on_data)
    with pytest.raises(OSError):
        kf.append([("b", b"row b\n")])
    monkeypatch.setattr(ledger, "atomic_write", real)
    assert json.loads(kf.sidecar.read_text())["pending"] == ["b"]
    assert kf.written_keys() == {"a"}             # b never reached the file: not counted as written
    assert kf.append([("b", b"row b\n"), ("a", b"row a\n")]) == {"b": True, "a": False}
    assert kf.path.read_bytes() == b"h\nrow a\nrow b\n"


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.iif"
    ledger.atomic_write(target, b"old")

    def boom(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(ledger.os, "fsync", boom)
    with pytest.raises(OSError):
        ledger.atomic_write(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.iif"]


def test_a_retry_after_midnight_goes_to_the_same_file_and_is_not_written_twice(tmp_path):
    """The file is the day the operation was planned, not the day of the attempt."""
    from datetime import datetime as dt
    c = CsvConnector("bank", {"directory": "out"}, runtime(tmp_path))
    planned = dt(2024, 5, 1, 23, 59, 59, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    first = bank_item(1)
    first.created_at = planned
    assert c.deliver([first])[0].ok                       # ...then the worker crashed before recording it
    retry = bank_item(1)
    retry.created_at, retry.attempts = planned, 1          # retried after midnight
    (again,) = c.deliver([retry])
    assert again.ok and again.detail["duplicate"]
    assert [p.name for p in sorted((tmp_path / "out").glob("*.csv"))] == ["bank-qbo_bank_row-2024-05-01.csv"]
    j = Item(2, "j", "journal", {"date": "2024-05-01", "lines": [{"account": "A", "amount": Decimal("1")},
                                                                  {"account": "B", "amount": Decimal("-1")}]},
             created_at=planned)
    i = IifConnector("qb", {"directory": "iif"}, runtime(tmp_path))
    assert i.deliver([j])[0].ok
    assert [p.name for p in (tmp_path / "iif").glob("*.iif")] == ["qb-2024-05-01.iif"]
    assert i.deliver([j])[0].detail["duplicate"]
