"""Currency rates behind one small interface.

``FxProvider.rate(base, quote, on) -> Rate``. Providers: ``fixed`` (rates from
the project file), ``ecb`` (European Central Bank reference rates, shipped
offline by the CurrencyConverter package; the default), ``openexchangerates``
(online; app id from the environment, base URL configurable). The rate Stripe
actually applied comes from a balance transaction (``stripe_rate``) and wins
wherever there is one. ``CachedProvider`` keeps fetched rates in the store's
``fx_rates`` table. Rates are Decimal; ``Rate.convert`` rounds once, to the
target currency's exponent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Mapping, Protocol

from runner.core.errors import LedgerflowError


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

    def convert_rounded(self, amount: Decimal) -> Decimal:
        """``amount`` (base currency) in the quote currency, rounded once to its exponent."""
        from runner.core.money import round_money
        return round_money(amount * self.rate, self.quote)

    def record(self) -> dict[str, str]:
        """What a posting records about the rate it used."""
        return {"rate": format(self.rate, "f"), "rate_source": self.source, "rate_date": self.date}


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


OXR_BASE_URL = "https://openexchangerates.org/api"
OXR_APP_ID_ENV = "OPENEXCHANGERATES_APP_ID"


class OpenExchangeRatesProvider:
    """Open Exchange Rates' historical rates (``/historical/YYYY-MM-DD.json``; USD-based).

    The app id comes from the environment (``OPENEXCHANGERATES_APP_ID``), never
    from a project file; ``base_url`` can point elsewhere (a stand-in in tests).
    """

    name = "openexchangerates"

    def __init__(self, app_id: str, base_url: str = OXR_BASE_URL, *, timeout: float = 10.0, client=None):
        self.app_id = app_id
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._client = client
        self._days: dict[str, dict[str, Decimal]] = {}

    def _rates(self, on: date) -> dict[str, Decimal]:
        day = on.isoformat()
        if day not in self._days:
            import httpx

            from runner.core import jsonio
            url = f"{self.base_url}/historical/{day}.json"
            try:
                client = self._client or httpx.Client(timeout=self.timeout)
                try:
                    resp = client.get(url, params={"app_id": self.app_id})
                finally:
                    if self._client is None:
                        client.close()
            except httpx.HTTPError as exc:
                raise FxError(f"Open Exchange Rates: GET {self.base_url}/historical/{day}.json failed: "
                              f"{type(exc).__name__}") from None
            body = jsonio.loads(resp.content) if resp.content else {}
            if resp.status_code != 200 or not isinstance(body, dict) or "rates" not in body:
                detail = body.get("description") or body.get("message") if isinstance(body, dict) else None
                raise FxError(f"Open Exchange Rates: GET {self.base_url}/historical/{day}.json answered "
                              f"{resp.status_code}{': ' + str(detail) if detail else ''} (expected 200 with rates)")
            base = str(body.get("base", "USD")).upper()
            rates = {k.upper(): Decimal(str(v)) for k, v in body["rates"].items()}
            rates[base] = Decimal(1)
            self._days[day] = rates
        return self._days[day]

    def rate(self, base: str, quote: str, on: date) -> Rate:
        base, quote = base.upper(), quote.upper()
        if base == quote:
            return Rate(base, quote, Decimal(1), self.name, on.isoformat())
        rates = self._rates(on)
        for code in (base, quote):
            if code not in rates:
                raise FxError(f"Open Exchange Rates has no {code} rate on {on.isoformat()}")
        value = (rates[quote] / rates[base]).quantize(Decimal("1e-10"))
        return Rate(base, quote, value, self.name, on.isoformat())


class CachedProvider:
    """A provider whose rates are kept in a cache (the store's ``fx_rates`` table through
    ``runner.store.fx_rates.RateCache``: one row per source, pair and requested date), so a rate is
    fetched once and reports repeat. ``cache``: ``cached(source, base, quote, day)`` and
    ``remember(source, base, quote, day, text)``."""

    def __init__(self, inner: FxProvider, cache):
        self.inner = inner
        self.cache = cache
        self.name = inner.name

    def rate(self, base: str, quote: str, on: date) -> Rate:
        base, quote = base.upper(), quote.upper()
        if base == quote:
            return Rate(base, quote, Decimal(1), self.name, on.isoformat())
        stored = self.cache.cached(self.name, base, quote, on.isoformat())
        if stored is not None:
            value, _, used = stored.partition("@")
            return Rate(base, quote, Decimal(value), self.name, used or on.isoformat())
        r = self.inner.rate(base, quote, on)
        self.cache.remember(self.name, base, quote, on.isoformat(), f"{format(r.rate, 'f')}@{r.date}")
        return r


class ChainProvider:
    """The first provider that has the rate (ECB lacks pegged currencies such as BHD,
    which a fixed rate covers)."""

    def __init__(self, providers: list[FxProvider]):
        self.providers = providers
        self.name = "+".join(p.name for p in providers)

    def rate(self, base: str, quote: str, on: date) -> Rate:
        problems = []
        for p in self.providers:
            try:
                return p.rate(base, quote, on)
            except FxError as exc:
                problems.append(f"{p.name}: {exc}")
        raise FxError(f"no rate {base.upper()}/{quote.upper()} on {on.isoformat()} ({'; '.join(problems)})")


def stripe_rate(balance_transaction: Mapping, source: Mapping | None = None) -> Rate | None:
    """The rate Stripe applied to a balance transaction (settlement per presentment unit).

    ``exchange_rate`` is set only when the charge was converted; the presentment
    currency is the source object's. None when there was no conversion.
    """
    raw = balance_transaction.get("exchange_rate")
    if raw is None:
        return None
    src = source if source is not None else balance_transaction.get("source")
    presentment = src.get("currency") if isinstance(src, Mapping) else None
    if not presentment:
        raise FxError(f"balance transaction {balance_transaction.get('id')}: exchange_rate without the source "
                      "object's currency (expand data.source)")
    when = date.fromtimestamp(int(balance_transaction.get("created", 0))) if balance_transaction.get("created") \
        else date.today()
    return Rate(str(presentment).upper(), str(balance_transaction["currency"]).upper(), Decimal(str(raw)), "stripe",
                when.isoformat())


def provider(name: str, settings: Mapping, *, cache=None, environ: Mapping[str, str] | None = None,
             base_url: str | None = None) -> FxProvider:
    """The named provider; with a ``cache`` (``CachedProvider``), its rates are kept there."""
    import os

    if name == "fixed":
        return FixedProvider(settings.get("fx_rates") or {})
    if name == "ecb":
        p: FxProvider = EcbProvider()
    elif name == "openexchangerates":
        env = environ if environ is not None else os.environ
        app_id = env.get(OXR_APP_ID_ENV)
        if not app_id:
            raise FxError(f"fx provider openexchangerates: environment variable {OXR_APP_ID_ENV} is not set")
        p = OpenExchangeRatesProvider(app_id, base_url or env.get("OPENEXCHANGERATES_URL") or OXR_BASE_URL)
    elif name == "stripe":
        raise FxError("fx provider stripe: Stripe's rate comes from a balance transaction's exchange_rate; "
                      "for other conversions choose ecb, openexchangerates or fixed")
    else:
        raise FxError(f"unknown FX provider {name!r} (known: fixed, ecb, openexchangerates, stripe)")
    return CachedProvider(p, cache) if cache is not None else p


def rate_chain(name: str, settings: Mapping, fixed: Mapping[str, str], *, cache=None,
               base_url: str | None = None) -> "ChainProvider":
    """The named provider (kept in ``cache``), then fixed rates for what it lacks (pegs the ECB
    has not, e.g. BHD). ``fixed`` and ``stripe`` name no provider of their own: only the fixed rates."""
    chain: list[FxProvider] = []
    if name not in ("fixed", "stripe"):
        chain.append(provider(name, settings, cache=cache, base_url=base_url))
    chain.append(FixedProvider(fixed))
    return ChainProvider(chain)

