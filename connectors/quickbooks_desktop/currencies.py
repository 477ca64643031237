"""QuickBooks Desktop's currency list names its built-in currencies, not by ISO code: the table
both the qbXML writer (qbxml.py) and the connection checks (actions.py,
no XML imports) use."""

from __future__ import annotations

CURRENCY_NAMES = {
    "USD": "US Dollar", "EUR": "Euro", "GBP": "British Pound Sterling", "CAD": "Canadian Dollar",
    "AUD": "Australian Dollar", "JPY": "Japanese Yen", "CHF": "Swiss Franc", "MXN": "Mexican Peso",
    "NZD": "New Zealand Dollar", "SEK": "Swedish Krona", "DKK": "Danish Krone", "SGD": "Singapore Dollar",
    "NOK": "Norwegian Krone", "HKD": "Hong Kong Dollar", "INR": "Indian Rupee", "CNY": "Chinese Yuan Renminbi",
}
_CODES = {v: k for k, v in CURRENCY_NAMES.items()}


def currency_name(code_or_name: str) -> str:
    """A CurrencyRef FullName as QuickBooks' currency list names it: "EUR" -> "Euro"; a name, or a
    code not in the table, is left as given (a renamed or added currency is named as the file names it)."""
    return CURRENCY_NAMES.get(code_or_name.strip().upper(), code_or_name) if len(code_or_name.strip()) == 3 \
        else code_or_name


def currency_code(code_or_name: str) -> str:
    """The ISO code of a CurrencyRef FullName ("Euro" -> "EUR"; an ISO code as it is)."""
    return _CODES.get(code_or_name, code_or_name.strip().upper())
