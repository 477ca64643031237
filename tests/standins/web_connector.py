"""A QuickBooks Web Connector and QuickBooks Desktop company file, as stand-ins.

``FakeQuickBooks`` runs qbXML request documents against an in-memory company
file the way QuickBooks does: every request document is first validated
against Intuit's schema (element order included), requests run in order under
``onError="continueOnError"``, adds answer with a TxnID/ListID, queries answer
statusCode 1 when nothing matches, a list name already taken answers 3100, a
reference to a missing account, item or customer answers 3140, and a record
another user holds answers 3175 (or ``busy_status``). Every response document is
schema-valid too.

Books: SalesReceiptAdd, CreditMemoAdd, ReceivePaymentAdd, DepositAdd, JournalEntryAdd,
ARRefundCreditCardAdd (a refund of a credit memo's credit out of an account; in the 12.0 XSD)
and CheckAdd (expense lines paid out of a bank account) are posted as QuickBooks posts them,
in the home currency (``journal()``, ``trial_balance()``):

======================  =====================================  =================================
request                 debit                                  credit
======================  =====================================  =================================
SalesReceiptAdd         DepositToAccountRef (else Undeposited  each line's OverrideItemAccountRef,
                        Funds)                                 else its item's income account
CreditMemoAdd           each line's item income account        ARAccountRef (else A/R [#ar]_)
ReceivePaymentAdd       DepositToAccountRef (else Undeposited  ARAccountRef (else A/R)
                        Funds)
DepositAdd              DepositToAccountRef                    each line's AccountRef (a
                                                               PaymentLine: Undeposited Funds)
JournalEntryAdd         JournalDebitLine accounts              JournalCreditLine accounts
ARRefundCreditCardAdd   ARAccountRef (else A/R)                RefundFromAccountRef
CheckAdd                each ExpenseLineAdd AccountRef         AccountRef (the bank)
======================  =====================================  =================================

.. [#ar] "Accounts Receivable", or "Accounts Receivable - EUR" for a foreign-currency
   customer (QuickBooks keeps one A/R account per currency).

Vendor rules enforced (sources: the qbXML 12.0 schema in shared/reference; Intuit, "Status
codes in response messages" (QuickBooks Desktop SDK); "Using the multicurrency feature with the
SDK"; JournalEntryAdd reference; QuickBooks' own error texts as integrators quote them):

* 3100 ``The name "X" of the list element is already in use.`` (CustomerAdd).
* 3120 ``Object "X" specified in the request cannot be found.`` (a TxnID to apply to).
* 3140 ``There is an invalid reference to QuickBooks <Account|Item|Customer|Currency> "X" in
  the <Txn>.`` - including, with multicurrency, ``QuickBooks error message: The currency of the
  account must be either in home currency or the transaction currency.``
* 3175 (``busy_requests``/``busy_status``; 3170 possible): the record is in use.
* 3180 ``There was an error when saving a General Journal transaction. QuickBooks error message:
  Transaction not in balance.`` (debits != credits), and other refused saves.
* 3250 ``This feature is not enabled or not available in this version of QuickBooks.``: a
  CurrencyRef other than the home currency, or an ExchangeRate other than 1, while the company
  file has multicurrency off (``multicurrency``, default False; ``home_currency`` default USD).
* Multicurrency on: a customer has one currency (CustomerAdd CurrencyRef, default home, fixed:
  there is no CustomerMod here); sales receipts, credit memos, payments and refunds are in
  their customer's currency (the 12.0 XSD gives them no CurrencyRef); deposits and journal
  entries name theirs (CurrencyRef); a check is in its bank account's currency. ExchangeRate
  (home units per foreign unit) when given, else the currency list's rate
  (``exchange_rates[code]``: "the exchange rate setting for a currency is used by default"),
  else 1 (an assumption). Currency names follow QuickBooks' currency list ("Euro",
  "US Dollar"); ISO codes are accepted too.

Home amounts are ``amount x rate`` rounded half-up to the cent; as in the QBO stand-in the
header (bank / A/R) gets ``round(total x rate)`` and the largest line absorbs a cent of
rounding (``rounding = "line"``: each line on its own, the header takes their sum). QuickBooks'
exact rule is not in the SDK documentation I found. Not modelled: sales tax, discounts,
inventory, item lines on checks other than through the item's account, applying payments to
invoices beyond checking the TxnID exists, home currency adjustments.

``WebConnector`` drives whole sessions over real HTTP as QBWC does —
serverVersion, clientVersion, authenticate, sendRequestXML /
receiveResponseXML until 100 percent, getLastError on errors, closeConnection —
either with zeep (a SOAP client built from Intuit's WSDL) or with raw SOAP 1.1
envelopes and the ``SOAPAction`` header.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
from lxml import etree

from .ledger import JournalTxn, Posting, TrialBalance, to_home, trial_balance

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
XSD_PATH = REFERENCE / "qbxml" / "qbxmlops120.xsd"
WSDL_PATH = REFERENCE / "qbwc" / "QBWebConnectorSvc.wsdl"
NS = "http://developer.intuit.com/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"

_SCHEMA: etree.XMLSchema | None = None


def qbxml_schema() -> etree.XMLSchema:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = etree.XMLSchema(etree.parse(str(XSD_PATH)))
    return _SCHEMA


HCP_RESPONSE = """<?xml version="1.0" ?>
<QBXML><QBXMLMsgsRs>
<HostQueryRs requestID="0" statusCode="0" statusSeverity="Info" statusMessage="Status OK"><HostRet>
<ProductName>QuickBooks Enterprise Solutions 23.0</ProductName><MajorVersion>33</MajorVersion><MinorVersion>0</MinorVersion>
<Country>US</Country>{versions}<IsAutomaticLogin>false</IsAutomaticLogin><QBFileMode>MultiUser</QBFileMode>
</HostRet></HostQueryRs>
</QBXMLMsgsRs></QBXML>"""


def hcp_response(versions: list[str]) -> str:
    return HCP_RESPONSE.format(versions="".join(f"<SupportedQBXMLVersion>{v}</SupportedQBXMLVersion>"
                                                for v in versions))


# QuickBooks' currency list names (built-in currencies) -> ISO code.
CURRENCIES = {"US Dollar": "USD", "Euro": "EUR", "British Pound Sterling": "GBP", "Canadian Dollar": "CAD",
              "Australian Dollar": "AUD", "Japanese Yen": "JPY", "Swiss Franc": "CHF", "Mexican Peso": "MXN",
              "New Zealand Dollar": "NZD", "Swedish Krona": "SEK", "Danish Krone": "DKK", "Singapore Dollar": "SGD"}
# The company file's chart (name -> QuickBooks AccountType) and items (name -> income account).
QBD_CHART = {
    "Stripe Clearing": "Bank", "Operating Bank": "Bank", "Undeposited Funds": "OtherCurrentAsset",
    "Accounts Receivable": "AccountsReceivable", "Sales": "Income", "Sales of Product Income": "Income",
    "Sales Refunds": "Income", "Application Fee Revenue": "Income", "Stripe Fees": "Expense",
    "Chargebacks": "Expense", "Dispute Fees": "Expense", "Platform Fees": "Expense", "Stripe Adjustments": "Expense",
    "Connected Accounts Payable": "OtherCurrentLiability", "FX Gain/Loss": "OtherExpense",
}
QBD_ITEMS = {"Stripe Sales": "Sales", "Sales": "Sales of Product Income", "Application Fees": "Application Fee Revenue",
             "Refunds": "Sales Refunds"}
CURRENCY_ACCOUNT_TYPES = {"Bank", "CreditCard", "AccountsReceivable", "AccountsPayable"}
BOOKED = ("SalesReceipt", "CreditMemo", "ReceivePayment", "Deposit", "JournalEntry", "ARRefundCreditCard", "Check")


@dataclass
class Account:
    type: str = "Bank"
    currency: str | None = None       # None: the home currency


@dataclass
class Txn:
    kind: str
    txn_id: str
    ref_number: str | None
    txn_date: str | None
    memo: str | None
    accounts: list[str]
    customer: str | None = None
    currency: str | None = None
    exchange_rate: Decimal = Decimal(1)
    total: Decimal = Decimal(0)
    open_credit: Decimal = Decimal(0)            # a credit memo's credit not yet refunded


class Refused(Exception):
    def __init__(self, code: int, message: str):
        self.code, self.message = code, message
        super().__init__(message)


def _chart() -> dict[str, Account]:
    return {name: Account(kind) for name, kind in QBD_CHART.items()}


def _amount(text: str | None, where: str) -> Decimal:
    try:
        return Decimal((text or "").strip())
    except InvalidOperation:
        raise Refused(3180, f"There was an error when saving a {where}. QuickBooks error message: "
                            f"the amount {text!r} is not valid.") from None


@dataclass
class FakeQuickBooks:
    """An open company file that answers qbXML."""

    accounts: dict[str, Account] = field(default_factory=_chart)   # name -> Account (a set of names is accepted)
    customers: dict[str, str] = field(default_factory=dict)       # name -> ListID
    other_names: set[str] = field(default_factory=set)            # vendors, employees, other names
    txns: list[Txn] = field(default_factory=list)
    busy_requests: int = 0            # the next N add requests answer busy_status (record in use)
    busy_status: int = 3175
    documents: list[str] = field(default_factory=list)            # every request document received
    versions: list[str] = field(default_factory=list)             # every <?qbxml version?> header
    items: dict[str, str] = field(default_factory=lambda: dict(QBD_ITEMS))   # item name -> income account
    home_currency: str = "USD"
    multicurrency: bool = False
    exchange_rates: dict[str, Decimal] = field(default_factory=dict)  # ISO code -> the currency list's rate
    customer_currency: dict[str, str] = field(default_factory=dict)   # customer name -> ISO code (foreign only)
    rounding: str = "total"
    ledger: list[JournalTxn] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        if not isinstance(self.accounts, dict):
            self.accounts = {name: Account(QBD_CHART.get(name, "Bank")) for name in self.accounts}

    # ---- set-up and books ----------------------------------------------------------------

    def add_account(self, name: str, kind: str = "Bank", currency: str | None = None) -> None:
        code = self._code(currency) if currency else None
        if code and code != self.home_currency and kind not in CURRENCY_ACCOUNT_TYPES:
            raise ValueError(f"a {kind} account is always in the home currency")
        self.accounts[name] = Account(kind, None if code == self.home_currency else code)

    def journal(self) -> list[JournalTxn]:
        return list(self.ledger)

    def trial_balance(self) -> TrialBalance:
        return trial_balance(self.ledger, self.home_currency)

    def process(self, request_xml: str) -> str:
        self.documents.append(request_xml)
        doc = etree.fromstring(request_xml.encode())
        qbxml_schema().assertValid(doc)
        pi = [n for n in doc.itersiblings(preceding=True) if isinstance(n, etree._ProcessingInstruction)]
        self.versions.append(pi[0].text if pi else "")
        msgs = doc.find("QBXMLMsgsRq")
        assert msgs.get("onError") == "continueOnError"
        out = [self._one(rq) for rq in msgs]
        body = f'<?xml version="1.0" ?><QBXML><QBXMLMsgsRs>{"".join(out)}</QBXMLMsgsRs></QBXML>'
        qbxml_schema().assertValid(etree.fromstring(body.encode()))
        return body

    # ---- one request ----------------------------------------------------------------

    def _rs(self, rq: etree._Element, code: int, message: str, ret: str = "") -> str:
        severity = "Info" if code in (0, 1) else ("Warn" if code < 1000 else "Error")
        name = rq.tag[:-2] + "Rs"
        return (f'<{name} requestID="{escape(rq.get("requestID", ""))}" statusCode="{code}" '
                f'statusSeverity="{severity}" statusMessage="{escape(message, {chr(34): "&quot;"})}">{ret}</{name}>')

    def _one(self, rq: etree._Element) -> str:
        tag = rq.tag
        try:
            if tag == "CustomerAddRq":
                return self._customer_add(rq)
            if tag == "CustomerQueryRq":
                name = rq.findtext("FullName")
                if name in self.customers:
                    return self._rs(rq, 0, "Status OK",
                                    f"<CustomerRet><ListID>{self.customers[name]}</ListID><Name>{escape(name)}</Name>"
                                    "</CustomerRet>")
                return self._rs(rq, 1, "A query request did not find a matching object in QuickBooks")
            if tag.endswith("AddRq") and tag[:-5] in BOOKED:
                return self._txn_add(rq)
            if tag.endswith("QueryRq"):
                return self._txn_query(rq)
        except Refused as r:
            return self._rs(rq, r.code, r.message)
        return self._rs(rq, 1030, "This request is not supported by this implementation.")

    # ---- currencies -----------------------------------------------------------------

    def _code(self, name: str | None) -> str:
        if name is None:
            return self.home_currency
        if name in CURRENCIES:
            return CURRENCIES[name]
        if len(name) == 3 and name.isupper():
            return name
        raise Refused(3140, f'There is an invalid reference to QuickBooks Currency "{name}".')

    def _currency_ref(self, el: etree._Element, kind: str) -> str | None:
        ref = el.find("CurrencyRef")
        if ref is None:
            return None
        name = ref.findtext("FullName") or ref.findtext("ListID")
        try:
            code = self._code(name)
        except Refused:
            raise Refused(3140, f'There is an invalid reference to QuickBooks Currency "{name}" in the {kind}.') from None
        if code != self.home_currency and not self.multicurrency:
            raise Refused(3250, "This feature is not enabled or not available in this version of QuickBooks.")
        return code

    # ---- lists ----------------------------------------------------------------------

    def _customer_add(self, rq) -> str:
        add = rq.find("CustomerAdd")
        name = add.findtext("Name")
        if name in self.customers or name in self.other_names:
            return self._rs(rq, 3100, f'The name "{name}" of the list element is already in use.')
        code = self._currency_ref(add, "Customer")
        list_id = f"{80000000 + next(self._ids):X}-1700000000"
        self.customers[name] = list_id
        if code and code != self.home_currency:
            self.customer_currency[name] = code
        return self._rs(rq, 0, "Status OK", f"<CustomerRet><ListID>{list_id}</ListID><TimeCreated>"
                                            "2024-01-01T00:00:00-05:00</TimeCreated><Name>"
                                            f"{escape(name)}</Name></CustomerRet>")

    def _customer(self, add, kind: str) -> str | None:
        ref = add.find("CustomerRef")
        if ref is None:
            return None
        name = ref.findtext("FullName")
        if name is None:
            list_id = ref.findtext("ListID")
            name = next((n for n, i in self.customers.items() if i == list_id), None)
            if name is None:
                raise Refused(3140, f'There is an invalid reference to QuickBooks Customer "{list_id}" in the {kind}.')
        if name not in self.customers:
            raise Refused(3140, f'There is an invalid reference to QuickBooks Customer "{name}" in the {kind}.')
        return name

    # ---- transactions ---------------------------------------------------------------

    def _txn_add(self, rq) -> str:
        add = rq[0]
        kind = add.tag[:-3]
        if self.busy_requests > 0:
            self.busy_requests -= 1
            return self._rs(rq, self.busy_status, f"There was an error when modifying a {kind}. QuickBooks error "
                                                  "message: This record is being used by another user.")
        accounts = [el.findtext("FullName") or el.findtext("ListID") for el in add.iter()
                    if el.tag.endswith("AccountRef")]
        for acc in accounts:
            if acc not in self.accounts:
                raise Refused(3140, f'There is an invalid reference to QuickBooks Account "{acc}" in the '
                                    f"{kind}. QuickBooks error message: Invalid argument.")
        customer = self._customer(add, kind)
        given = add.findtext("ExchangeRate")
        if not self.multicurrency and given is not None and Decimal(given) != 1:
            raise Refused(3250, "This feature is not enabled or not available in this version of QuickBooks.")
        named = self._currency_ref(add, kind) if kind in ("Deposit", "JournalEntry") else None
        if kind == "Check":
            bank = self.accounts.get(add.findtext("AccountRef/FullName") or "")
            cur = (bank.currency if bank else None) or self.home_currency
        elif customer is not None and kind != "JournalEntry":
            cur = self.customer_currency.get(customer, self.home_currency)
        else:
            cur = named or self.home_currency
        postings, extra = self._postings(add, kind, cur, customer)
        for acc, _ in postings:
            a = self.accounts.get(acc)
            if a is None:                         # a default QuickBooks creates (Undeposited Funds, A/R - EUR, ...)
                a = self.accounts[acc] = Account(QBD_CHART.get(acc, "AccountsReceivable" if acc.startswith(
                    "Accounts Receivable") else "Income"), cur if acc.startswith("Accounts Receivable - ") else None)
            if a.currency not in (None, self.home_currency, cur):
                raise Refused(3140, f'There is an invalid reference to QuickBooks Account "{acc}" in the {kind}. '
                                    "QuickBooks error message: The currency of the account must be either in home "
                                    "currency or the transaction currency.")
        rate = Decimal(1)
        if cur != self.home_currency:
            rate = Decimal(given) if given is not None else Decimal(str(self.exchange_rates.get(cur, 1)))
        amounts = [a for _, a in postings]
        header = None if kind == "JournalEntry" else 0
        lines = [i for i in range(len(amounts)) if i != header]
        absorb = header if (header is not None and self.rounding == "line") or not lines \
            else max(lines, key=lambda i: abs(amounts[i]))
        home = to_home(amounts, rate, absorb=absorb)
        for apply_to, amount in extra:           # a refund uses up the credit memo's credit
            apply_to.open_credit -= amount
        total = abs(amounts[0]) if header is not None else sum(a for a in amounts if a > 0)
        txn = Txn(kind, f"{next(self._ids):X}-1700000000", add.findtext("RefNumber"), add.findtext("TxnDate"),
                  add.findtext("Memo"), accounts, customer, cur, rate, total,
                  open_credit=total if kind == "CreditMemo" else Decimal(0))
        self.txns.append(txn)
        foreign = cur != self.home_currency
        self.ledger.append(JournalTxn(txn.txn_id, txn.txn_date or "2024-01-01", kind, txn.memo or "", txn.ref_number,
                                      [Posting(acc, h, cur if foreign else None, a if foreign else None)
                                       for (acc, a), h in zip(postings, home)]))
        memo = f"<Memo>{escape(txn.memo)}</Memo>" if txn.memo else ""
        ref = f"<RefNumber>{escape(txn.ref_number)}</RefNumber>" if txn.ref_number and kind != "Deposit" else ""
        date = f"<TxnDate>{txn.txn_date}</TxnDate>" if txn.txn_date else ""
        dated = ref + date if kind == "Check" else date + ref          # CheckRet has RefNumber before TxnDate
        return self._rs(rq, 0, "Status OK", f"<{kind}Ret><TxnID>{txn.txn_id}</TxnID><TimeCreated>"
                                            f"2024-01-01T00:00:00-05:00</TimeCreated>{dated}{memo}</{kind}Ret>")

    def _ar(self, add, cur: str) -> str:
        return add.findtext("ARAccountRef/FullName") or (
            "Accounts Receivable" if cur == self.home_currency else f"Accounts Receivable - {cur}")

    def _item_account(self, line, kind: str) -> str:
        override = line.findtext("OverrideItemAccountRef/FullName")
        item = line.findtext("ItemRef/FullName")
        if item is not None and item not in self.items:
            raise Refused(3140, f'There is an invalid reference to QuickBooks Item "{item}" in the {kind}. '
                                "QuickBooks error message: Invalid argument.")
        if override:
            return override
        if item is None:
            raise Refused(3180, f"There was an error when saving a {kind}. QuickBooks error message: "
                                "a line needs an item.")
        return self.items[item]

    def _line_amount(self, line, kind: str) -> Decimal:
        if line.find("Amount") is not None:
            return _amount(line.findtext("Amount"), kind)
        rate = line.findtext("Rate")
        return _amount(rate, kind) * _amount(line.findtext("Quantity") or "1", kind) if rate else Decimal(0)

    def _txn(self, txn_id: str | None, kind: str | None = None) -> Txn:
        found = next((t for t in self.txns if t.txn_id == txn_id and (kind is None or t.kind == kind)), None)
        if found is None:
            raise Refused(3120, f'Object "{txn_id}" specified in the request cannot be found.')
        return found

    def _postings(self, add, kind: str, cur: str, customer: str | None) -> tuple[list[tuple[str, Decimal]], list]:
        """(account, foreign amount, debit > 0), the header account first; and credit used up."""
        extra: list = []
        if kind in ("SalesReceipt", "CreditMemo"):
            lines = [(self._item_account(line, kind), self._line_amount(line, kind))
                     for line in add.findall(f"{kind}LineAdd")]
            total = sum((a for _, a in lines), Decimal(0))
            if kind == "SalesReceipt":
                return [(add.findtext("DepositToAccountRef/FullName") or "Undeposited Funds", total)] + \
                    [(acc, -a) for acc, a in lines], extra
            return [(self._ar(add, cur), -total)] + lines, extra
        if kind == "ReceivePayment":
            applied = add.findall("AppliedToTxnAdd")
            for a in applied:
                self._txn(a.findtext("TxnID"))
            total = _amount(add.findtext("TotalAmount"), kind) if add.find("TotalAmount") is not None else sum(
                (_amount(a.findtext("PaymentAmount") or "0", kind) for a in applied), Decimal(0))
            return [(add.findtext("DepositToAccountRef/FullName") or "Undeposited Funds", total),
                    (self._ar(add, cur), -total)], extra
        if kind == "Deposit":
            lines = []
            for line in add.findall("DepositLineAdd"):
                if line.find("PaymentTxnID") is not None:
                    paid = self._txn(line.findtext("PaymentTxnID"))
                    lines.append(("Undeposited Funds", paid.total))
                else:
                    lines.append((line.findtext("AccountRef/FullName"), _amount(line.findtext("Amount") or "0", kind)))
            total = sum((a for _, a in lines), Decimal(0))
            return [(add.findtext("DepositToAccountRef/FullName"), total)] + [(acc, -a) for acc, a in lines], extra
        if kind == "JournalEntry":
            out = []
            for line in add:
                if line.tag not in ("JournalDebitLine", "JournalCreditLine"):
                    continue
                acc = line.findtext("AccountRef/FullName")
                if not acc:
                    raise Refused(3180, "There was an error when saving a General Journal transaction. QuickBooks "
                                        "error message: every line needs an account.")
                amount = _amount(line.findtext("Amount") or "0", kind)
                out.append((acc, amount if line.tag == "JournalDebitLine" else -amount))
            if sum((a for _, a in out), Decimal(0)) != 0:
                raise Refused(3180, "There was an error when saving a General Journal transaction. QuickBooks "
                                    "error message: Transaction not in balance.")
            return out, extra
        if kind == "ARRefundCreditCard":
            total = Decimal(0)
            for a in add.findall("RefundAppliedToTxnAdd"):
                memo = self._txn(a.findtext("TxnID"), "CreditMemo")
                amount = _amount(a.findtext("RefundAmount"), kind)
                if memo.customer != customer or amount > memo.open_credit:
                    raise Refused(3180, f"There was an error when saving a {kind}. QuickBooks error message: "
                                        f"the refund is more than the credit available on {memo.txn_id} "
                                        f"({memo.open_credit}) for this customer.")
                extra.append((memo, amount))
                total += amount
            source = add.findtext("RefundFromAccountRef/FullName")
            if not source:
                raise Refused(3180, f"There was an error when saving a {kind}. QuickBooks error message: "
                                    "choose the account the refund is paid from.")
            return [(source, -total), (self._ar(add, cur), total)], extra
        if kind == "Check":
            lines = []
            for line in add.findall("ExpenseLineAdd"):
                acc = line.findtext("AccountRef/FullName")
                if not acc:
                    raise Refused(3180, "There was an error when saving a Check. QuickBooks error message: "
                                        "an expense line needs an account.")
                lines.append((acc, _amount(line.findtext("Amount") or "0", kind)))
            for line in add.findall("ItemLineAdd"):
                lines.append((self._item_account(line, kind), self._line_amount(line, kind)))
            total = sum((a for _, a in lines), Decimal(0))
            return [(add.findtext("AccountRef/FullName"), -total)] + lines, extra
        raise Refused(1030, "This request is not supported by this implementation.")

    def _txn_query(self, rq) -> str:
        kind = rq.tag[:-len("QueryRq")]
        found = [t for t in self.txns if t.kind == kind]
        if rq.find("RefNumber") is not None:
            found = [t for t in found if t.ref_number == rq.findtext("RefNumber")]
        rng = rq.find("TxnDateRangeFilter")
        if rng is not None:
            lo, hi = rng.findtext("FromTxnDate"), rng.findtext("ToTxnDate")
            found = [t for t in found if (not lo or t.txn_date >= lo) and (not hi or t.txn_date <= hi)]
        if not found:
            return self._rs(rq, 1, "A query request did not find a matching object in QuickBooks")
        rets = "".join(f"<{kind}Ret><TxnID>{t.txn_id}</TxnID>"
                       + (f"<Memo>{escape(t.memo)}</Memo>" if t.memo else "") + f"</{kind}Ret>" for t in found)
        return self._rs(rq, 0, "Status OK", rets)


# ---- the Web Connector side -----------------------------------------------------------

class RawSoap:
    """SOAP calls as QBWC sends them: a hand-built envelope and the SOAPAction header."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(timeout=30)

    def call(self, op: str, **params: Any) -> Any:
        inner = "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in params.items() if v is not None)
        envelope = ('<?xml version="1.0" encoding="utf-8"?>'
                    f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                    f'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soap:Body><{op} xmlns="{NS}">{inner}</{op}>'
                    "</soap:Body></soap:Envelope>")
        r = self.http.post(self.url, content=envelope.encode(), headers={
            "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{NS}{op}"'})
        root = etree.fromstring(r.content)
        fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
        if fault is not None:
            raise RuntimeError(f"SOAP fault {r.status_code}: {fault.findtext('faultstring')}")
        r.raise_for_status()
        result = root.find(f"{{{SOAP_ENV}}}Body/{{{NS}}}{op}Response/{{{NS}}}{op}Result")
        if op == "authenticate":
            return [s.text or "" for s in result.findall(f"{{{NS}}}string")]
        if op == "receiveResponseXML":
            return int(result.text)
        return "" if result is None or result.text is None else result.text

    def close(self) -> None:
        self.http.close()


class ZeepSoap:
    """SOAP calls through zeep, with the client built from Intuit's WSDL."""

    def __init__(self, url: str, wsdl: str | None = None):
        import zeep
        self.client = zeep.Client(wsdl or str(WSDL_PATH))
        self.service = self.client.create_service(f"{{{NS}}}QBWebConnectorSvcSoap", url)

    def call(self, op: str, **params: Any) -> Any:
        result = getattr(self.service, op)(**params)
        if op == "authenticate":
            return [s or "" for s in result] if result is not None else []
        if result is None:
            return ""
        return result

    def close(self) -> None:
        pass


@dataclass
class SessionLog:
    auth: list[str] = field(default_factory=list)
    requests_per_trip: list[int] = field(default_factory=list)
    percents: list[int] = field(default_factory=list)
    last_error: str | None = None
    closed: str | None = None
    broken_off: bool = False


class WebConnector:
    """Runs sessions like QBWC: polls, fetches qbXML, has QuickBooks run it, posts the response back."""

    def __init__(self, soap, quickbooks: FakeQuickBooks, *, versions: list[str] | None = None):
        self.soap = soap
        self.qb = quickbooks
        self.versions = versions or ["1.0", "2.0", "3.0", "12.0", "13.0", "14.0", "15.0", "16.0"]

    def run_session(self, user: str, password: str, *, break_after: int | None = None,
                    hresult_on_trip: int | None = None, max_trips: int = 1000) -> SessionLog:
        log = SessionLog()
        self.soap.call("serverVersion")
        assert self.soap.call("clientVersion", strVersion="2.3.0.215") in ("", None)
        log.auth = self.soap.call("authenticate", strUserName=user, strPassword=password)
        ticket, status = log.auth[0], log.auth[1]
        if status in ("nvu", "none"):
            log.closed = self.soap.call("closeConnection", ticket=ticket)
            return log
        major, minor = self.versions[-1].split(".")
        for trip in range(max_trips):
            xml = self.soap.call("sendRequestXML", ticket=ticket,
                                 strHCPResponse=hcp_response(self.versions) if trip == 0 else "",
                                 strCompanyFileName="C:\\Company\\books.qbw", qbXMLCountry="US",
                                 qbXMLMajorVers=int(major), qbXMLMinorVers=int(minor))
            if not xml:
                log.last_error = self.soap.call("getLastError", ticket=ticket)
                log.closed = self.soap.call("closeConnection", ticket=ticket)
                return log
            n = len(etree.fromstring(xml.encode()).find("QBXMLMsgsRq"))
            log.requests_per_trip.append(n)
            if hresult_on_trip == trip:
                pct = self.soap.call("receiveResponseXML", ticket=ticket, response="", hresult="0x80040408",
                                     message="Could not start QuickBooks.")
            else:
                response = self.qb.process(xml)
                if break_after is not None and trip + 1 >= break_after:
                    log.broken_off = True       # QuickBooks ran it; the answer never reached the service
                    return log
                pct = self.soap.call("receiveResponseXML", ticket=ticket, response=response, hresult="",
                                     message="")
            log.percents.append(pct)
            if pct < 0:
                log.last_error = self.soap.call("getLastError", ticket=ticket)
                log.closed = self.soap.call("closeConnection", ticket=ticket)
                return log
            if pct >= 100:
                log.closed = self.soap.call("closeConnection", ticket=ticket)
                return log
        raise AssertionError(f"session did not finish in {max_trips} round trips")
