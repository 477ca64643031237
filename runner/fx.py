"""Currency rates behind one small interface.

``FxProvider.rate(base, quote, on) -> Rate``. Providers: ``fixed`` (rates from
the project file), ``ecb`` (European Central Bank reference rates, shipped
offline by the CurrencyConverter package; the default). The reconciliation
issue adds the rate Stripe applied and Open Exchange Rates. Rates are Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Mapping, Protocol

from .errors import LedgerflowError


class FxError(LedgerflowError):
    pass


@dataclass(frozen=True)
class Rate:
    """``rate`` quote-currency units per one base-currency unit."""

    base: str
    quote: str
    rate: Decimal
    source: str
    date: str

    def convert(self, amount: Decimal) -> Decimal:
        return amount * self.rate


class FxProvider(Protocol):
    name: str

    def rate(self, base: str, quote: str, on: date) -> Rate: ...


class FixedProvider:
    """Rates written in the project file: ``settings.fx_rates: {"EUR/USD": "1.08"}``."""

    name = "fixed"

    def __init__(self, rates: Mapping[str, str]):
        self.rates = {k.upper(): Decimal(str(v)) for k, v in rates.items()}

    def rate(self, base: str, quote: str, on: date) -> Rate:
        base, quote = base.upper(), quote.upper()
        if base == quote:
            return Rate(base, quote, Decimal(1), self.name, on.isoformat())
        if f"{base}/{quote}" in self.rates:
            return Rate(base, quote, self.rates[f"{base}/{quote}"], self.name, on.isoformat())
        if f"{quote}/{base}" in self.rates:
            inv = (Decimal(1) / self.rates[f"{quote}/{base}"]).quantize(Decimal("1e-10"))
            return Rate(base, quote, inv, self.name, on.isoformat())
        raise FxError(f"no fixed rate {base}/{quote} in settings.fx_rates")


class EcbProvider:
    """ECB reference rates, offline, from the CurrencyConverter package's bundled file."""

    name = "ecb"
    _converter = None

    def _c(self):
        if EcbProvider._converter is None:
            from currency_converter import CurrencyConverter
            EcbProvider._converter = CurrencyConverter(fallback_on_missing_rate=True,
                                                       fallback_on_wrong_date=True, decimal=True)
        return EcbProvider._converter

    def rate(self, base: str, quote: str, on: date) -> Rate:
        base, quote = base.upper(), quote.upper()
        if base == quote:
            return Rate(base, quote, Decimal(1), self.name, on.isoformat())
        c = self._c()
        for code in (base, quote):
            if code not in c.currencies:
                raise FxError(f"the ECB reference rates have no {code}")
        first, last = c.bounds[base]
        used = min(max(on, first), last)
        value = c.convert(Decimal(1), base, quote, date=used)
        return Rate(base, quote, Decimal(value).quantize(Decimal("1e-10")), self.name, used.isoformat())


def provider(name: str, settings: Mapping) -> FxProvider:
    if name == "fixed":
        return FixedProvider(settings.get("fx_rates") or {})
    if name == "ecb":
        return EcbProvider()
    raise FxError(f"unknown FX provider {name!r} (known here: fixed, ecb)")
