"""Expected vs produced payloads: money as decimals, subset vs exact."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from runner.language.flowtest.compare import MISSING, compare, plain, same_value


def test_money_compares_as_decimals_whichever_side_is_text():
    assert same_value("12.50", Decimal("12.5"))
    assert same_value(12.5, Decimal("12.50"))
    assert same_value(Decimal("12.500"), "12.5")
    assert same_value(5000, Decimal("5000"))
    assert not same_value("12.51", Decimal("12.5"))


def test_text_stays_text_and_booleans_are_not_numbers():
    assert not same_value("007", "7")           # two strings: compared as written
    assert not same_value(True, 1)
    assert not same_value(0, False)
    assert same_value(None, None)
    assert not same_value("abc", Decimal("1"))


def test_subset_ignores_extra_fields_exact_reports_them():
    expected = {"Amount": "20.00", "Line": [{"Amount": 20}]}
    actual = {"Amount": Decimal("20.00"), "Memo": "x", "Line": [{"Amount": Decimal("20.00"), "Id": "1"}]}
    assert compare(expected, actual, exact=False) == []
    assert sorted(compare(expected, actual, exact=True), key=str) == \
        sorted([(("Memo",), MISSING, "x"), (("Line", 0, "Id"), MISSING, "1")], key=str)


def test_missing_fields_and_list_lengths_are_differences():
    diffs = compare({"a": 1, "lines": [{"x": 1}, {"x": 2}]}, {"lines": [{"x": 1}]}, exact=False)
    assert (("a",), 1, MISSING) in diffs
    assert (("lines", 1), {"x": 2}, MISSING) in diffs


def test_yaml_values_become_json_like_values():
    assert plain({"a": 12.5, "d": date(2024, 3, 9), "l": [1.25, True]}) == \
        {"a": Decimal("12.5"), "d": "2024-03-09", "l": [Decimal("1.25"), True]}
