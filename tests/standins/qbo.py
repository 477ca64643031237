"""A QuickBooks Online Accounting API v3 stand-in (ASGI), behaving as Intuit documents.

* OAuth 2 token endpoint with refresh-token rotation (``TokenAuthority``);
  bearer tokens expire, and an expired or unknown one gets HTTP 401 with
  Intuit's lower-case ``fault.error[]`` body.
* Realm-scoped ``/v3/company/{realmId}/{resource}``, ``/query`` and ``/batch``
  (at most 30 BatchItemRequest, each answered under its ``bId``), with
  ``minorversion`` recorded on every call.
* ``requestid``: a repeated id returns the original response, nothing is redone.
* Limits per company: 500 requests a minute, 10 in flight, 40 batch requests a
  minute; past them HTTP 429 with a Fault (code 3001) and Retry-After.
* Fault bodies ``{"Fault": {"Error": [{Message, Detail, code, element}], "type"}}``
  for required fields (2020), unknown properties (2010), string lengths (2050),
  unknown references (2500), business rules (6000), duplicate DocNumber (6140),
  duplicate names (6240); injected faults can come inside HTTP 200.
* ``lose``: for these resources, do the work, then answer 504, as a response lost on the way.

Books (``Company.journal()`` / ``trial_balance()``): every transaction the stand-in accepts
is posted the way QuickBooks Online posts it, in the company's home currency:

=============  ==============================================  ===============================
entity         debit                                           credit
=============  ==============================================  ===============================
SalesReceipt   DepositToAccountRef (Undeposited Funds if none)  each line item's IncomeAccountRef
RefundReceipt  each line item's IncomeAccountRef               DepositToAccountRef
CreditMemo     each line item's IncomeAccountRef               Accounts Receivable [#ar]_
Purchase       each line's AccountRef                          AccountRef (the bank / card)
JournalEntry   its Debit lines                                 its Credit lines
Deposit        DepositToAccountRef                             each line's AccountRef
Transfer       ToAccountRef                                    FromAccountRef
=============  ==============================================  ===============================

.. [#ar] a foreign-currency credit memo goes to "Accounts Receivable - EUR" (QuickBooks keeps
   one A/R account per currency).

A line whose item is missing or has no IncomeAccountRef posts to "Uncategorized Income".

Vendor rules enforced (sources: Intuit, "Manage multiple currencies",
developer.intuit.com/app/developer/qbo/docs/workflows/manage-multiple-currencies; the
Accounting API entity reference for SalesReceipt/RefundReceipt/CreditMemo/Purchase/Deposit/
JournalEntry/Transfer/Customer; "Error codes" and "Handling common errors" pages):

* ``Company.home_currency`` (default USD) and ``Company.multicurrency`` (default off, the
  QuickBooks default; it cannot be turned on through the API, so a test sets the flag).
* Multicurrency off: a CurrencyRef other than the home currency, on a transaction or a
  customer, is a ValidationFault 6000 (business validation).
* Multicurrency on:
  - a customer/vendor has one currency (CurrencyRef, default home) fixed when created (there
    is no update endpoint here, so it cannot change); a transaction naming a customer (or a
    Purchase naming a vendor) must be in that currency, else 6000; a transaction without
    CurrencyRef takes its customer's currency;
  - only bank, credit card, A/R and A/P accounts carry a currency; income and expense
    accounts are always in the home currency (seeding refuses otherwise);
  - every account a transaction touches must be in the home currency or the transaction's
    currency: 6000 "The currency of the account must be either in home currency or the
    transaction currency." (QuickBooks' own wording);
  - ExchangeRate = home units per one foreign unit. When a foreign-currency transaction has
    none, QuickBooks takes the rate from its exchange-rate list for TxnDate (here
    ``Company.exchange_rates[(code, date)]``, else the latest earlier one) and, with none,
    uses 1 (Zed Systems' QBO import notes; intuit/quickbooks-online-mcp-server#75); the rate
    used is stored on the document, as QBO returns it. Home-currency documents have rate 1.
  - HomeTotalAmt is stored on documents with a TotalAmt.
* JournalEntry: debits must equal credits (6000 "Transaction must be balanced"); a line on an
  Accounts Receivable / Accounts Payable account needs a customer / vendor Entity (6000).

Rounding: each home amount is ``amount x ExchangeRate`` rounded half-up to the cent. Intuit
does not document whether QBO rounds per line or on the total (not found in the API
reference or the multicurrency guide), so the stand-in takes the documented figure,
HomeTotalAmt, as the one QuickBooks fixes: with ``Company.rounding = "total"`` (default) the
header account (bank, A/R, ...) gets ``round(TotalAmt x rate)`` = HomeTotalAmt and the largest
line absorbs any cent the per-line rounding leaves over; with ``rounding = "line"`` every line
is rounded on its own and the header takes their sum. A JournalEntry has no header: its
largest line absorbs the difference. Either way each document balances in the home currency.

Not modelled: sales tax, discounts, inventory items, Payment/Invoice linking, home currency
adjustments (revaluation), and the exact Detail text of the currency faults (Intuit's
references give the code, 6000, but I found no verbatim Detail for them).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.core import jsonio

from .ledger import JournalTxn, Posting, TrialBalance, to_home, trial_balance
from .oauth_server import TokenAuthority

# Fields Intuit requires on create, per entity (Accounting API reference).
REQUIRED = {
    "SalesReceipt": ["Line"], "RefundReceipt": ["Line", "DepositToAccountRef"], "CreditMemo": ["Line", "CustomerRef"],
    "Deposit": ["Line", "DepositToAccountRef"], "JournalEntry": ["Line"],
    "Purchase": ["PaymentType", "AccountRef", "Line"], "Transfer": ["FromAccountRef", "ToAccountRef", "Amount"],
    "Customer": ["DisplayName"],
}
LINE_DETAIL = {"SalesItemLineDetail": [], "AccountBasedExpenseLineDetail": ["AccountRef"],
               "JournalEntryLineDetail": ["PostingType", "AccountRef"], "DepositLineDetail": ["AccountRef"]}
ALLOWED = {
    "SalesReceipt": "DocNumber TxnDate PrivateNote CurrencyRef ExchangeRate Line CustomerRef DepositToAccountRef "
                    "ClassRef DepartmentRef PaymentMethodRef PaymentRefNum CustomerMemo",
    "RefundReceipt": "DocNumber TxnDate PrivateNote CurrencyRef ExchangeRate Line CustomerRef DepositToAccountRef "
                     "ClassRef DepartmentRef PaymentMethodRef PaymentRefNum",
    "CreditMemo": "DocNumber TxnDate PrivateNote CurrencyRef ExchangeRate Line CustomerRef ClassRef DepartmentRef",
    "Deposit": "DocNumber TxnDate PrivateNote CurrencyRef ExchangeRate Line DepositToAccountRef DepartmentRef",
    "JournalEntry": "DocNumber TxnDate PrivateNote CurrencyRef ExchangeRate Line Adjustment DepartmentRef",
    "Purchase": "DocNumber TxnDate PrivateNote CurrencyRef ExchangeRate Line PaymentType AccountRef EntityRef "
                "PaymentMethodRef DepartmentRef",
    "Transfer": "TxnDate PrivateNote CurrencyRef ExchangeRate FromAccountRef ToAccountRef Amount DepartmentRef",
    "Customer": "DisplayName PrimaryEmailAddr GivenName FamilyName CompanyName CurrencyRef Notes",
}
RESOURCES = {e.lower(): e for e in REQUIRED}
REF_TARGET = {"AccountRef": "Account", "DepositToAccountRef": "Account", "FromAccountRef": "Account",
              "ToAccountRef": "Account", "ItemRef": "Item", "ClassRef": "Class", "DepartmentRef": "Department",
              "CustomerRef": "Customer", "PaymentMethodRef": "PaymentMethod", "TaxCodeRef": "TaxCode"}
DOCNUMBER_MAX = 21

# A chart of accounts for a Stripe -> QuickBooks company (name -> AccountType).
CHART = {
    "Stripe Clearing": "Bank", "Operating Bank": "Bank", "Undeposited Funds": "Other Current Asset",
    "Accounts Receivable": "Accounts Receivable", "Sales": "Income", "Sales of Product Income": "Income",
    "Sales Refunds": "Income", "Application Fee Revenue": "Income", "Stripe Fees": "Expense",
    "Chargebacks": "Expense", "Dispute Fees": "Expense", "Platform Fees": "Expense",
    "Stripe Adjustments": "Expense", "Connected Accounts Payable": "Other Current Liability",
    "FX Gain/Loss": "Other Expense", "Uncategorized Income": "Income",
}
# Items and their income accounts.
ITEMS = {"Stripe Sales": "Sales", "Sales": "Sales of Product Income", "Application Fees": "Application Fee Revenue",
         "Refunds": "Sales Refunds"}
# Account types that can carry a currency other than the home currency (multicurrency guide).
CURRENCY_ACCOUNT_TYPES = {"Bank", "Credit Card", "Accounts Receivable", "Accounts Payable"}
FALLBACK_INCOME = "Uncategorized Income"
BUSINESS = "A business validation error has occurred while processing your request"


class Fault(Exception):
    def __init__(self, code: str, message: str, detail: str = "", element: str = "",
                 ftype: str = "ValidationFault", status: int = 400):
        self.body = {"Fault": {"Error": [{"Message": message, "Detail": detail or message, "code": code,
                                          "element": element}], "type": ftype},
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S.000-07:00")}
        self.status = status
        super().__init__(message)


def required_missing(path: str) -> Fault:
    return Fault("2020", "Required param missing, need to supply the required value for the API",
                 f"Required parameter {path} is missing in the request", path)


@dataclass
class Company:
    realm_id: str
    home_currency: str = "USD"
    multicurrency: bool = False
    rounding: str = "total"                 # "total" or "line": see the module docstring
    exchange_rates: dict[tuple[str, str], Decimal] = field(default_factory=dict)   # (code, YYYY-MM-DD) -> rate
    entities: dict[str, dict[str, dict]] = field(default_factory=dict)
    requestids: dict[str, tuple[int, Any]] = field(default_factory=dict)
    calls: deque = field(default_factory=deque)
    batch_calls: deque = field(default_factory=deque)
    inflight: int = 0
    next_id: int = 100
    ledger: list[JournalTxn] = field(default_factory=list)

    def add(self, entity: str, doc: dict) -> dict:
        self.next_id += 1
        doc = {**doc, "Id": str(self.next_id), "SyncToken": "0",
               "MetaData": {"CreateTime": time.strftime("%Y-%m-%dT%H:%M:%S-07:00")}}
        self.entities.setdefault(entity, {})[doc["Id"]] = doc
        return doc

    def find(self, entity: str, name: str) -> dict | None:
        key = "DisplayName" if entity in ("Customer", "Vendor", "Employee") else "Name"
        return next((d for d in self.all(entity) if d.get(key) == name), None)

    def seed_account(self, name: str, account_type: str | None = "Bank", currency: str | None = None) -> str:
        """An account (found by name if it exists, else created). Only bank, credit card, A/R
        and A/P accounts may be in a currency other than the home currency."""
        existing = self.find("Account", name)
        if existing is not None:
            return existing["Id"]
        account_type = account_type or CHART.get(name, "Bank")
        cur = currency or self.home_currency
        if cur != self.home_currency and account_type not in CURRENCY_ACCOUNT_TYPES:
            raise ValueError(f"a {account_type} account is always in the home currency {self.home_currency}")
        return self.add("Account", {"Name": name, "FullyQualifiedName": name, "AccountType": account_type,
                                    "CurrencyRef": {"value": cur}, "Active": True})["Id"]

    def seed_named(self, entity: str, name: str, currency: str | None = None,
                   income_account: str | None = None) -> str:
        """A customer/vendor/item/... by name (found if it exists). Items get an IncomeAccountRef
        (``income_account``, else the chart's account for that item, if the account exists)."""
        existing = self.find(entity, name)
        if existing is not None:
            return existing["Id"]
        key = "DisplayName" if entity in ("Customer", "Vendor", "Employee") else "Name"
        doc: dict[str, Any] = {key: name, "FullyQualifiedName": name}
        if entity in ("Customer", "Vendor"):
            doc["CurrencyRef"] = {"value": currency or self.home_currency}
        if entity == "Item":
            acc_name = income_account or ITEMS.get(name)
            acc = self.find("Account", acc_name) if acc_name else None
            if acc is not None:
                doc.update(Type="Service", IncomeAccountRef={"value": acc["Id"], "name": acc["Name"]})
        return self.add(entity, doc)["Id"]

    def seed_chart(self) -> None:
        """The chart of accounts in ``CHART``, the items in ``ITEMS`` and the vendor Stripe."""
        for name, kind in CHART.items():
            self.seed_account(name, kind)
        for item in ITEMS:
            self.seed_named("Item", item)
        self.seed_named("Vendor", "Stripe")

    def rate_for(self, code: str, date: str | None) -> Decimal:
        """QuickBooks' own rate for a currency on a date: that date's, else the latest earlier, else 1."""
        if code == self.home_currency:
            return Decimal(1)
        rates = sorted((d, r) for (c, d), r in self.exchange_rates.items() if c == code and (not date or d <= date))
        return Decimal(str(rates[-1][1])) if rates else Decimal(1)

    def all(self, entity: str) -> list[dict]:
        return list(self.entities.get(entity, {}).values())

    def journal(self) -> list[JournalTxn]:
        """Every accepted transaction as the double-entry postings QBO made (home currency)."""
        return list(self.ledger)

    def trial_balance(self) -> TrialBalance:
        return trial_balance(self.ledger, self.home_currency)


@dataclass
class QboStandin:
    per_minute: int = 500
    batch_per_minute: int = 40
    concurrency: int = 10
    batch_max: int = 30
    latency: float = 0.0                    # seconds each API call takes
    retry_after: bool = True                # send Retry-After on 429
    authority: TokenAuthority = field(default_factory=TokenAuthority)
    companies: dict[str, Company] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    inject: list[tuple[str, int, dict]] = field(default_factory=list)    # (resource, status, body) for next calls
    lose: list[str] = field(default_factory=list)   # resources whose next create/batch is done, then answered 504
    throttled: int = 0
    batch_log: list[tuple[float, int]] = field(default_factory=list)     # (time, items) per accepted batch

    def company(self, realm_id: str = "9130350000000001", *, chart: bool = False, **kw: Any) -> Company:
        """The company for a realm (created with ``kw``: home_currency, multicurrency, rounding);
        ``chart=True`` seeds ``CHART``/``ITEMS`` (see ``Company.seed_chart``)."""
        if realm_id not in self.companies:
            self.companies[realm_id] = Company(realm_id, **kw)
            if chart:
                self.companies[realm_id].seed_chart()
        return self.companies[realm_id]

    def _one_company(self, realm_id: str | None) -> Company:
        if realm_id is None:
            if len(self.companies) != 1:
                raise ValueError(f"name the realm: {sorted(self.companies)}")
            realm_id = next(iter(self.companies))
        return self.companies[realm_id]

    def journal(self, realm_id: str | None = None) -> list[JournalTxn]:
        return self._one_company(realm_id).journal()

    def trial_balance(self, realm_id: str | None = None) -> TrialBalance:
        return self._one_company(realm_id).trial_balance()

    def connect(self, realm_id: str) -> dict:
        """Tokens as after `connect` (for a TokenStore)."""
        return self.authority.seed()

    # ---- HTTP --------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(routes=[
            *self.authority.routes(),
            Route("/v3/company/{realm}/query", self.query, methods=["GET", "POST"]),
            Route("/v3/company/{realm}/batch", self.batch, methods=["POST"]),
            Route("/v3/company/{realm}/{resource}", self.create, methods=["POST"]),
            Route("/v3/company/{realm}/{resource}/{id}", self.read, methods=["GET"]),
        ])

    async def _gate(self, request: Request, *, batch: bool = False) -> tuple[Company | None, Response | None]:
        realm = request.path_params["realm"]
        self.log.append({"method": request.method, "path": request.url.path, "params": dict(request.query_params)})
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not self.authority.valid_access(auth[7:]):
            return None, JSONResponse({"warnings": None, "intuitObject": None, "fault": {"error": [{
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired or invalid", "code": "3200"}], "type": "AUTHENTICATION"},
                "report": None, "queryResponse": None, "batchItemResponse": [], "attachableResponse": [],
                "syncErrorResponse": None, "requestId": None, "time": int(time.time() * 1000), "status": None,
                "cdcresponse": []}, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="Intuit"'})
        mv = request.query_params.get("minorversion")
        if mv is not None and not mv.isdigit():
            return None, JSONResponse(Fault("2010", "Request has invalid or unsupported property",
                                            f"minorversion {mv!r} is not valid", "minorversion").body, status_code=400)
        if realm not in self.companies:
            return None, JSONResponse(Fault("3100", "message=ApplicationAuthorizationFailed; errorCode=003100; "
                                                    "statusCode=403", "Company not found or not authorized", "",
                                            "AuthorizationFault", 403).body, status_code=403)
        co = self.companies[realm]
        now = time.time()
        for q in (co.calls, co.batch_calls):
            while q and q[0] <= now - 60:
                q.popleft()
        over = None
        if co.inflight >= self.concurrency:
            over = 1.0
        elif len(co.calls) >= self.per_minute:
            over = (co.calls[0] if co.calls else now) + 60 - now
        elif batch and len(co.batch_calls) >= self.batch_per_minute:
            over = (co.batch_calls[0] if co.batch_calls else now) + 60 - now
        if over is not None:
            self.throttled += 1
            headers = {"Retry-After": str(max(1, int(over + 0.999)))} if self.retry_after else {}
            return None, JSONResponse(Fault("3001", "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                                            "The request limit was reached.", "", "SERVICE", 429).body,
                                      status_code=429, headers=headers)
        co.calls.append(now)
        if batch:
            co.batch_calls.append(now)
        return co, None

    async def _run(self, request: Request, co: Company, work) -> Response:
        co.inflight += 1
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            rid = request.query_params.get("requestid")
            if rid and rid in co.requestids:
                status, body = co.requestids[rid]
                return JSONResponse(json.loads(jsonio.dumps(body)), status_code=status)
            resource = request.path_params.get("resource", request.url.path.rsplit("/", 1)[-1])
            for i, (res, status, body) in enumerate(self.inject):
                if res in (resource, "*"):
                    del self.inject[i]
                    return Response(jsonio.dumps(body), status_code=status, media_type="application/json")
            try:
                status, body = 200, await work()
            except Fault as f:
                status, body = f.status, f.body
            if rid and status < 500:
                co.requestids[rid] = (status, body)
            if resource in self.lose and request.method == "POST":
                self.lose.remove(resource)
                return Response("<html>504 Gateway Time-out</html>", status_code=504)
            return Response(jsonio.dumps(body), status_code=status, media_type="application/json")
        finally:
            co.inflight -= 1

    async def _json(self, request: Request) -> Any:
        try:
            return jsonio.loads((await request.body()).decode())
        except ValueError:
            raise Fault("2010", "Request has invalid or unsupported property", "the body is not JSON") from None

    async def create(self, request: Request) -> Response:
        co, err = await self._gate(request)
        if err:
            return err
        resource = request.path_params["resource"]

        async def work():
            if resource not in RESOURCES:
                raise Fault("2010", "Request has invalid or unsupported property", f"unknown resource {resource}")
            entity = RESOURCES[resource]
            body = await self._json(request)
            doc = body.get(entity, body) if isinstance(body, dict) else body
            return {entity: self.do_create(co, entity, doc), "time": time.strftime("%Y-%m-%dT%H:%M:%S-07:00")}
        return await self._run(request, co, work)

    async def read(self, request: Request) -> Response:
        co, err = await self._gate(request)
        if err:
            return err

        async def work():
            entity = RESOURCES.get(request.path_params["resource"]) or request.path_params["resource"].capitalize()
            doc = co.entities.get(entity, {}).get(request.path_params["id"])
            if doc is None:
                raise Fault("610", "Object Not Found", "Object Not Found : Something you're trying to use has "
                                                       "been made inactive. Check the fields with accounts, "
                                                       "customers, items, vendors or employees.")
            return {entity: doc}
        return await self._run(request, co, work)

    async def query(self, request: Request) -> Response:
        co, err = await self._gate(request)
        if err:
            return err

        async def work():
            q = request.query_params.get("query") or (await request.body()).decode()
            return {"QueryResponse": self.do_query(co, q), "time": time.strftime("%Y-%m-%dT%H:%M:%S-07:00")}
        return await self._run(request, co, work)

    async def batch(self, request: Request) -> Response:
        co, err = await self._gate(request, batch=True)
        if err:
            return err

        async def work():
            body = await self._json(request)
            items = body.get("BatchItemRequest") if isinstance(body, dict) else None
            if not isinstance(items, list) or not items:
                raise required_missing("BatchItemRequest")
            if len(items) > self.batch_max:
                raise Fault("1005", "Batch size exceeded",
                            f"BatchItemRequest holds {len(items)} items; the maximum is {self.batch_max}")
            bids = [i.get("bId") for i in items]
            if any(not b for b in bids) or len(set(bids)) != len(bids):
                raise Fault("2010", "Request has invalid or unsupported property", "bId must be set and unique", "bId")
            out = []
            for it in items:
                try:
                    if "Query" in it:
                        out.append({"bId": it["bId"], "QueryResponse": self.do_query(co, it["Query"])})
                        continue
                    if it.get("operation") != "create":
                        raise Fault("2010", "Request has invalid or unsupported property",
                                    f"operation {it.get('operation')!r} is not supported here", "operation")
                    entity = next((k for k in it if k in REQUIRED), None)
                    if entity is None:
                        raise required_missing("BatchItemRequest.<Entity>")
                    out.append({"bId": it["bId"], entity: self.do_create(co, entity, it[entity])})
                except Fault as f:
                    out.append({"bId": it["bId"], **{k: v for k, v in f.body.items() if k == "Fault"}})
            self.batch_log.append((time.time(), len(items)))
            return {"BatchItemResponse": out, "time": time.strftime("%Y-%m-%dT%H:%M:%S-07:00")}
        return await self._run(request, co, work)

    # ---- the accounting ------------------------------------------------------------------

    def do_create(self, co: Company, entity: str, doc: Any) -> dict:
        if not isinstance(doc, dict):
            raise Fault("2010", "Request has invalid or unsupported property", f"{entity} must be an object")
        allowed = set(ALLOWED[entity].split())
        for k in doc:
            if k not in allowed:
                raise Fault("2010", "Request has invalid or unsupported property",
                            f"Property Name:{k} specified is unsupported or invalid", k)
        for k in REQUIRED[entity]:
            if doc.get(k) in (None, "", []):
                raise required_missing(k)
        dn = doc.get("DocNumber")
        if dn is not None and len(str(dn)) > DOCNUMBER_MAX:
            raise Fault("2050", "String length is either shorter or longer than supported by specification",
                        f"String length specified does not match the supported length. Min:0 Max:{DOCNUMBER_MAX} "
                        f"supplied length:{len(str(dn))}", "DocNumber")
        self._check_refs(co, doc, entity)
        cur = (doc.get("CurrencyRef") or {}).get("value")
        party = self._party(co, entity, doc)
        if cur is None:
            cur = (party or {}).get("CurrencyRef", {}).get("value", co.home_currency) if co.multicurrency \
                else co.home_currency
        if cur != co.home_currency and not co.multicurrency:
            raise Fault("6000", BUSINESS,
                        f"Business Validation Error: Multicurrency is not turned on; {cur} is not the home currency "
                        f"{co.home_currency}.", "CurrencyRef")
        total = Decimal(0)
        debit = credit = Decimal(0)
        for i, line in enumerate(doc.get("Line") or []):
            amount = line.get("Amount")
            if amount is None:
                raise required_missing("Line.Amount")
            try:
                amount = Decimal(str(amount))
            except InvalidOperation:
                raise Fault("2010", "Request has invalid or unsupported property", f"Line[{i}].Amount",
                            "Line.Amount") from None
            dt = line.get("DetailType")
            if dt not in LINE_DETAIL:
                raise required_missing("Line.DetailType")
            detail = line.get(dt)
            if not isinstance(detail, dict):
                raise required_missing(f"Line.{dt}")
            for k in LINE_DETAIL[dt]:
                if not detail.get(k):
                    raise required_missing(f"Line.{dt}.{k}")
            if dt == "JournalEntryLineDetail":
                if detail["PostingType"] == "Debit":
                    debit += amount
                else:
                    credit += amount
            total += amount
        if entity == "JournalEntry" and debit != credit:
            raise Fault("6000", BUSINESS,
                        "Business Validation Error: Transaction must be balanced: debits and credits differ.")
        if entity == "Customer":
            name = doc["DisplayName"]
            if any(c.get("DisplayName") == name for e in ("Customer", "Vendor", "Employee") for c in co.all(e)):
                raise Fault("6240", "Duplicate Name Exists Error",
                            "The name supplied already exists. : Another customer, vendor or employee is already "
                            "using this name. Please use a different name.", "DisplayName")
        if dn is not None:
            for other in co.all(entity):
                if other.get("DocNumber") == dn:
                    raise Fault("6140", "Duplicate Document Number Error",
                                "Duplicate Document Number Error : You must specify a different number. This number "
                                f"has already been used. DocNumber={dn} is assigned to TxnType={entity} with "
                                f"TxnId={other['Id']}", "DocNumber")
        rate = Decimal(1)
        postings: list[tuple[str, Decimal]] = []
        if entity != "Customer":
            self._check_currencies(co, entity, doc, cur, party)
            if cur != co.home_currency:
                given = doc.get("ExchangeRate")
                rate = Decimal(str(given)) if given not in (None, "") else co.rate_for(cur, doc.get("TxnDate"))
                if rate <= 0:
                    raise Fault("2010", "Request has invalid or unsupported property",
                                f"ExchangeRate {given} must be positive", "ExchangeRate")
            postings = self._postings(co, entity, doc, cur, total)
        stored = json.loads(jsonio.dumps(doc), parse_float=Decimal)
        stored["CurrencyRef"] = {"value": cur}
        if "Line" in stored and entity != "JournalEntry":
            stored["TotalAmt"] = total
        home: list[Decimal] = []
        if postings:
            header = 0 if entity in ("SalesReceipt", "RefundReceipt", "CreditMemo", "Purchase", "Deposit") else None
            amounts = [a for _, a in postings]
            lines = [i for i in range(len(amounts)) if i != header]
            absorb = header if (header is not None and co.rounding == "line") or not lines \
                else max(lines, key=lambda i: abs(amounts[i]))
            home = to_home(amounts, rate, absorb=absorb)
            if co.multicurrency:
                stored["ExchangeRate"] = rate
                if header is not None:
                    stored["HomeTotalAmt"] = abs(home[header])
        created = co.add(entity, stored)
        if postings:
            foreign = cur != co.home_currency
            co.ledger.append(JournalTxn(
                id=created["Id"], date=str(doc.get("TxnDate") or time.strftime("%Y-%m-%d")), doc_type=entity,
                memo=str(doc.get("PrivateNote") or ""), doc_number=dn,
                postings=[Posting(acc, h, cur if foreign else None, a if foreign else None)
                          for (acc, a), h in zip(postings, home)]))
        return created

    # ---- currencies and postings ---------------------------------------------------------

    def _party(self, co: Company, entity: str, doc: dict) -> dict | None:
        """The customer (or a Purchase's vendor/customer) whose currency the transaction must use."""
        ref = doc.get("CustomerRef")
        kind = "Customer"
        if entity == "Purchase" and isinstance(doc.get("EntityRef"), dict):
            ref, kind = doc["EntityRef"], doc["EntityRef"].get("type") or "Vendor"
        if not isinstance(ref, dict) or not ref.get("value"):
            return None
        return co.entities.get(kind, {}).get(str(ref["value"]))

    def _account(self, co: Company, ref: Any) -> dict:
        return co.entities["Account"][str(ref["value"])]

    def _accounts_used(self, doc: dict) -> list[tuple[str, Any]]:
        out = [(k, doc[k]) for k in ("DepositToAccountRef", "AccountRef", "FromAccountRef", "ToAccountRef")
               if isinstance(doc.get(k), dict)]
        for line in doc.get("Line") or []:
            detail = line.get(line.get("DetailType"), {}) or {}
            if isinstance(detail.get("AccountRef"), dict):
                out.append((f"Line.{line['DetailType']}.AccountRef", detail["AccountRef"]))
        return out

    def _check_currencies(self, co: Company, entity: str, doc: dict, cur: str, party: dict | None) -> None:
        if party is not None and co.multicurrency:
            pcur = party.get("CurrencyRef", {}).get("value", co.home_currency)
            if pcur != cur:
                who = party.get("DisplayName", party["Id"])
                raise Fault("6000", BUSINESS,
                            f"Business Validation Error: {who} uses {pcur}; a transaction with a customer or vendor "
                            f"must be in that customer's or vendor's currency, not {cur}.", "CurrencyRef")
        for element, ref in self._accounts_used(doc):
            acc = self._account(co, ref)
            acur = acc.get("CurrencyRef", {}).get("value", co.home_currency)
            if acur not in (co.home_currency, cur):
                raise Fault("6000", BUSINESS,
                            "Business Validation Error: The currency of the account must be either in home currency "
                            f"or the transaction currency. (Account {acc.get('Name')} is in {acur}; the transaction "
                            f"is in {cur}.)", element)
        if entity == "JournalEntry":
            for line in doc["Line"]:
                detail = line["JournalEntryLineDetail"]
                kind = self._account(co, detail["AccountRef"]).get("AccountType")
                need = {"Accounts Receivable": "customer", "Accounts Payable": "vendor"}.get(kind)
                entity_ref = (detail.get("Entity") or {}).get("EntityRef")
                if need and not entity_ref:
                    raise Fault("6000", BUSINESS,
                                f"Business Validation Error: When you use {kind}, you must choose a {need} in the "
                                "Name field.", "Line.JournalEntryLineDetail.Entity")

    def _income_account(self, co: Company, detail: dict) -> str:
        item = co.entities.get("Item", {}).get(str((detail.get("ItemRef") or {}).get("value")))
        ref = (item or {}).get("IncomeAccountRef")
        acc = co.entities.get("Account", {}).get(str(ref["value"])) if ref else None
        return acc["Name"] if acc else FALLBACK_INCOME

    def _ar_account(self, co: Company, cur: str) -> str:
        return "Accounts Receivable" if cur == co.home_currency else f"Accounts Receivable - {cur}"

    def _postings(self, co: Company, entity: str, doc: dict, cur: str, total: Decimal) -> list[tuple[str, Decimal]]:
        """(account name, foreign amount, debit > 0) for the document; the header account first."""
        name = lambda ref: self._account(co, ref)["Name"]   # noqa: E731
        lines = [(line, Decimal(str(line["Amount"]))) for line in doc.get("Line") or []]
        if entity in ("SalesReceipt", "RefundReceipt", "CreditMemo"):
            sign = -1 if entity == "SalesReceipt" else 1          # income credited on a sale, debited on a refund
            if entity == "CreditMemo":
                header = self._ar_account(co, cur)
            elif doc.get("DepositToAccountRef"):
                header = name(doc["DepositToAccountRef"])
            else:
                header = "Undeposited Funds"                       # QBO's default for a sales receipt
            out = [(header, -sign * total)]
            for line, amount in lines:
                detail = line.get("SalesItemLineDetail")
                acc = self._income_account(co, detail or {})
                out.append((acc, sign * amount))
            return out
        if entity == "Purchase":
            return [(name(doc["AccountRef"]), -total)] + [
                (name(line["AccountBasedExpenseLineDetail"]["AccountRef"]), amount) for line, amount in lines]
        if entity == "Deposit":
            return [(name(doc["DepositToAccountRef"]), total)] + [
                (name(line["DepositLineDetail"]["AccountRef"]), -amount) for line, amount in lines]
        if entity == "JournalEntry":
            return [(name(line["JournalEntryLineDetail"]["AccountRef"]),
                     amount if line["JournalEntryLineDetail"]["PostingType"] == "Debit" else -amount)
                    for line, amount in lines]
        if entity == "Transfer":
            amount = Decimal(str(doc["Amount"]))
            return [(name(doc["ToAccountRef"]), amount), (name(doc["FromAccountRef"]), -amount)]
        return []

    def _check_refs(self, co: Company, value: Any, entity: str, key: str = "") -> None:
        if isinstance(value, list):
            for v in value:
                self._check_refs(co, v, entity, key)
            return
        if not isinstance(value, dict):
            return
        for k, v in value.items():
            target = REF_TARGET.get(k)
            if k == "EntityRef" and isinstance(v, dict):
                target = v.get("type") or value.get("Type") or "Vendor"
            if target and isinstance(v, dict):
                if not v.get("value"):
                    raise required_missing(f"{k}.value")
                if str(v["value"]) not in co.entities.get(target, {}):
                    raise Fault("2500", "Invalid Reference Id",
                                f"Invalid Reference Id : {target}s element id {v['value']} not found", k)
            else:
                self._check_refs(co, v, entity, k)

    QUERY = re.compile(r"^\s*select\s+\*\s+from\s+(\w+)(?:\s+where\s+(\w+)\s*=\s*'((?:[^'\\]|\\.)*)')?"
                       r"(?:\s+maxresults\s+(\d+))?\s*$", re.I)

    def do_query(self, co: Company, q: str) -> dict:
        m = self.QUERY.match(q or "")
        if not m:
            raise Fault("4000", "Error parsing query", f"QueryParserError: Encountered an unsupported query: {q[:80]}")
        entity, fld, raw, limit = m.groups()
        rows = co.all(entity)
        if fld:
            value = re.sub(r"\\(.)", r"\1", raw)
            def get(r):
                v = r.get(fld)
                return v.get("Address") if isinstance(v, dict) else v
            rows = [r for r in rows if str(get(r)) == value]
        rows = rows[: int(limit) if limit else 100]
        return {entity: rows, "startPosition": 1, "maxResults": len(rows)} if rows else {}
