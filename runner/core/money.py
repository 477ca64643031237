"""Money: Decimal from parse to payload.

Stripe sends amounts as integers in the currency's minor unit. The exponent is
per currency and Stripe's is not always ISO 4217's:

* zero-decimal in Stripe's API (amount 500 JPY means 500 yen);
* three-decimal (BHD, JOD, KWD, OMR, TND; Stripe requires the last digit be 0);
* special cases: ISK is zero-decimal in ISO 4217, but Stripe's API keeps it
  two-decimal for backwards compatibility (500 means 5 ISK, always ``00``);
  HUF and TWD are two-decimal in the API, payouts in whole units.

``from_minor`` converts with the API exponent, then rounds *once* (half-even)
to the booking exponent, so ``ISK 500`` books as ``Decimal("5")``.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache

ZERO_DECIMAL = frozenset(
    "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
)
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
# currencies Stripe represents with 2 decimals although ISO 4217 books 0
STRIPE_TWO_DECIMAL_BOOKED_WHOLE = frozenset({"ISK"})


class MoneyError(ValueError):
    """An amount or currency that cannot be turned into money."""


def _code(currency: object) -> str:
    if not isinstance(currency, str) or len(currency.strip()) != 3 or not currency.strip().isalpha():
        raise MoneyError(f"expected a three-letter ISO currency code, got {currency!r}")
    return currency.strip().upper()


@lru_cache(maxsize=512)
def _exponents(currency: str) -> tuple[int, int, Decimal]:
    """(Stripe API exponent, booking exponent, booking quantum) for a currency."""
    code = _code(currency)
    api = 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2
    booking = 0 if code in STRIPE_TWO_DECIMAL_BOOKED_WHOLE else api
    return api, booking, Decimal(1).scaleb(-booking)


def api_exponent(currency: str) -> int:
    """Digits after the decimal point in Stripe's integer amounts."""
    return _exponents(currency)[0]


def booking_exponent(currency: str) -> int:
    """Digits after the decimal point when booking in a ledger (ISO 4217)."""
    return _exponents(currency)[1]


def quantum(currency: str) -> Decimal:
    return _exponents(currency)[2]


def to_decimal(value: object, what: str = "amount") -> Decimal:
    """A Decimal from an int, a Decimal or a numeric string; never from a float."""
    if isinstance(value, bool):
        raise MoneyError(f"{what}: expected a number, got a boolean")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise MoneyError(f"{what}: expected a finite number, got {value}")
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        raise MoneyError(f"{what}: got a float ({value!r}); money must stay Decimal — "
                         "use the money filter or quote the number")
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise MoneyError(f"{what}: expected a number, got {value!r}") from None
        if not d.is_finite():
            raise MoneyError(f"{what}: expected a finite number, got {value!r}")
        return d
    raise MoneyError(f"{what}: expected a number, got {type(value).__name__} {value!r}")


def round_money(value: object, currency: str) -> Decimal:
    """Round once, half-even, to the currency's booking exponent."""
    return to_decimal(value).quantize(quantum(currency), rounding=ROUND_HALF_EVEN)


def from_minor(amount: object, currency: str) -> Decimal:
    """Stripe minor units -> Decimal in major units, at the booking exponent."""
    if isinstance(amount, bool) or not isinstance(amount, (int, Decimal, str)):
        raise MoneyError(f"expected an integer amount in minor units, got {amount!r}")
    if not isinstance(currency, str):
        _code(currency)
    api, _, q = _exponents(currency)
    minor = to_decimal(amount)
    if minor != minor.to_integral_value():
        raise MoneyError(f"expected an integer amount in minor units, got {amount!r}")
    return minor.scaleb(-api).quantize(q, rounding=ROUND_HALF_EVEN)


def to_minor(value: object, currency: str) -> int:
    """Decimal major units -> Stripe integer minor units."""
    d = round_money(value, currency)
    return int(d.scaleb(api_exponent(currency)))
