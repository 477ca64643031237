from decimal import Decimal

import pytest

from runner.core import money


@pytest.mark.parametrize("amount,currency,expected", [
    (1050, "usd", Decimal("10.50")),
    (1050, "JPY", Decimal("1050")),
    (1050, "krw", Decimal("1050")),
    (12340, "BHD", Decimal("12.340")),
    (500, "KWD", Decimal("0.500")),
    (500, "ISK", Decimal("5")),          # Stripe: two-decimal in the API, whole krónur in the books
    (1999, "HUF", Decimal("19.99")),
    (-250, "eur", Decimal("-2.50")),
    (0, "usd", Decimal("0.00")),
])
def test_from_minor_uses_the_currency_exponent(amount, currency, expected):
    got = money.from_minor(amount, currency)
    assert got == expected and str(got) == str(expected)


def test_round_trip_minor_units():
    for cur in ("usd", "jpy", "bhd", "isk"):
        for minor in (0, 1000, 123400, -5000):
            assert money.to_minor(money.from_minor(minor, cur), cur) == minor


@pytest.mark.parametrize("bad", [10.5, "12.5", True, None, "abc"])
def test_from_minor_rejects_non_integers(bad):
    with pytest.raises(money.MoneyError):
        money.from_minor(bad, "usd")


def test_floats_never_become_money():
    with pytest.raises(money.MoneyError, match="float"):
        money.to_decimal(0.1)


@pytest.mark.parametrize("bad", ["US", "usdd", "12$", None, 840])
def test_bad_currency_code(bad):
    with pytest.raises(money.MoneyError, match="three-letter"):
        money.from_minor(100, bad)


def test_rounding_happens_once_half_even():
    assert money.round_money(Decimal("2.345"), "usd") == Decimal("2.34")
    assert money.round_money(Decimal("2.355"), "usd") == Decimal("2.36")
    assert money.round_money("1.5", "jpy") == Decimal("2")
