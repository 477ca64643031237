"""A local stand-in for Sage Business Cloud Accounting (API v3.1), as Sage documents it, keeping
the books: every stored document also posts, in base currency, to a double-entry ledger that a
books harness reads back with :meth:`SageStandIn.journal` and :meth:`SageStandIn.trial_balance`.

Sources: [REF] developer.sage.com/accounting/reference (v3.1 swagger; read through the generated
model docs, e.g. SynergiTech/sage-php docs/Model/{SalesInvoice,ContactPayment,FinancialSettings,
BusinessExchangeRate}.md); [ERR] developer.sage.com/accounting "Frequently Raised Errors";
[KB-FX] Sage Accounting help "Foreign currency transactions" (help.sbc.sage.com/en-gb/accounting/
trading-abroad/extra-foreign-currency.html), "How to invoice in another currency" and "How to set up
multi-currency" (ca-kb.sage.com 250409201323443, 240304191542963), "Set up to do business in other
countries" (help.sbc.sage.com/en-us/accounting/banking/multi-currency-banking.html); [S50] Sage 50/200
currency settings ("Currency per Pound Sterling", "1 £ equals"; gb-kb.sage.com 200427112159205).
[STAND-IN] marks a rule Sage does not document that this stand-in had to choose.

Protocol
* OAuth 2: ``/token`` takes the client id and secret in the form body; access tokens live 300 s;
  refresh tokens rotate at every use (a spent one answers ``400 invalid_grant``);
  ``/oauth2/auth/central`` redirects back with a code.
* ``/v3.1/...``: Bearer token required (``401`` once it has expired), and the ``X-Business``
  header selecting the business. This stand-in insists on it (400 ``MissingHeader``); Sage itself
  routes a request without it to the user's lead business (developer.sage.com/accounting/
  announcements/2019-03-27), so that 400 is a [STAND-IN] strictness, kept for an existing test.
* Lists [REF]: ``items_per_page`` (1..200, default 20) and ``page``; answers ``{$total, $page,
  $next, $back, $itemsPerPage, $items}``; items carry ``id``, ``displayed_as`` and ``$path`` plus
  what ``attributes`` asks for. Filters: ``search``, ``contact_id``, ``contact_type_id``,
  ``transaction_type_id``, ``bank_account_id``, ``from_date``/``to_date``, ``updated_or_created_since``.
* Errors [ERR]: a JSON list of ``{$severity, $dataCode, $message, $source}``; 422 ``RecordInvalid``
  on invalid data (the $message texts are this stand-in's: Sage documents the format, not the
  wording), 404 for an unknown key, 429 with ``Retry-After`` and 5xx on demand.
* ``lose_response``: create (and post) the record, then fail or stall, as a lost response does.
* ``GET /financial_settings`` [REF FinancialSettings]: ``base_currency``, ``multi_currency_enabled``,
  ``use_live_exchange_rates`` (always false here).

Currency rules
* The business has a base currency (default USD) and foreign currencies are off unless enabled
  (``multicurrency=True``; in Sage a premium feature switched on under Financial Settings >
  Currencies [KB-FX]). Any currency other than base while it is off: 422 on ``currency_id``.
* A contact carries a currency (``currency_id``, default base) [REF Contact, KB-FX: "enter the
  correct currency in your contact records"]. Sales invoices, credit notes and contact payments are
  in their contact's currency: ``currency_id`` defaults to it [KB-FX: "new invoices use the default
  currency set for the customer"], and another one is a 422 on ``currency_id`` (Sage locks a
  contact's currency once it is invoiced and says to create a new contact for another currency).
* ``exchange_rate`` means units of the foreign currency per ONE unit of base currency
  (base 1 USD, EUR document at 0.92: 92.00 EUR is 100.00 USD), so base = foreign / exchange_rate and
  ``inverse_exchange_rate`` = 1 / exchange_rate. Sage's v3.1 reference only says "the exchange rate
  for the invoice"; the direction is Sage's product convention: Sage 50/200 enter rates as
  "Currency per Pound Sterling" / "1 £ equals" [S50], and Sage Accounting's live rates come from
  the ECB / Federal Reserve [KB-FX], both quoted as foreign units per base unit.
* A foreign document with no ``exchange_rate`` takes the business exchange rate for its currency
  (``exchange_rates={"EUR": "0.92"}``; Sage uses the live or business-defined rate [KB-FX,
  REF BusinessExchangeRate]); with none set: 422 on ``exchange_rate`` [STAND-IN: no live rates].
  Base-currency documents always carry exchange_rate 1.
* Bank accounts carry a currency (default base) [REF BankAccount]. A receipt or payment through
  a bank account must be in that account's currency, unless the account is in base currency,
  which takes any currency (banking shows base values; the foreign amount and rate stay on the
  payment [KB-FX]); otherwise 422 on ``bank_account_id``. Journals are base currency only
  [KB-FX: "posts journals and miscellaneous entries only in the base currency"]; other payments and
  bank transfers are in their bank account's currency (base unless the account is foreign), and a
  transfer between accounts of different currencies is refused [STAND-IN].
* Rounding [STAND-IN]: base amounts are computed per line (net and tax each), ROUND_HALF_UP to
  0.01; a document's base totals are the sums of its lines, so every posting balances exactly.

Ledger (base currency; debit > 0, credit < 0; account names as in the chart below)
* SALES_INVOICE: Dr Debtors Control total / Cr each line's ledger account net / Cr Sales Tax Control tax.
* SALES_CREDIT_NOTE: the reverse.
* CUSTOMER_RECEIPT: Dr the bank account's ledger account / Cr Debtors Control; each allocation
  clears the artefact at the artefact's own rate (its remaining base outstanding when it clears it
  in full), and the difference to the receipt's base value is a realised exchange gain or loss on
  the business's exchange gain/loss account (``fx_account``, default "FX Gain/Loss") [KB-FX: "track
  any losses or gains"]. CUSTOMER_REFUND: Dr Debtors Control / Cr bank, same rule.
* OTHER_PAYMENT: Dr each line's ledger account net (+ Purchase Tax Control tax) / Cr bank;
  OTHER_RECEIPT the reverse (tax to Sales Tax Control).
* JOURNAL: its lines (debit - credit); total debits must equal total credits, else 422.
* BANK_TRANSFER: Dr the to-account's ledger account / Cr the from-account's.

Chart seeded per business (names the books harness uses): bank accounts "Operating Bank" (1200) and
"Stripe Clearing" (1210), each posting to its own ledger account of the same name; "Debtors
Control" (1100), "Sales Tax Control" (2200), "Purchase Tax Control" (2201), "Connected Accounts
Payable" (2300), "Sales" (4000), "Sales Refunds" (4010), "Application Fee Revenue" (4100), "Platform
Fees" (4110), "Stripe Fees" (7900), "Chargebacks" (7910), "Dispute Fees" (7920), "Stripe
Adjustments" (7930), "FX Gains and Losses" (7950), "FX Gain/Loss" (7960), plus filler overheads.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from runner.core import jsonio
from tests.standins.ledger import JournalTxn, Posting, TrialBalance, trial_balance
from tests.standins.oauth_server import TokenAuthority

REFERENCE_MAX = 25
WRAPPERS = {"contacts": "contact", "sales_invoices": "sales_invoice", "sales_credit_notes": "sales_credit_note",
            "contact_payments": "contact_payment", "other_payments": "other_payment", "journals": "journal",
            "bank_transfers": "bank_transfer"}
READ_ONLY = ("ledger_accounts", "tax_rates", "bank_accounts")
CENT = Decimal("0.01")

DEBTORS = "Debtors Control"
SALES_TAX = "Sales Tax Control"
PURCHASE_TAX = "Purchase Tax Control"
FX_GAIN_LOSS = "FX Gain/Loss"
# (name, nominal code, ledger_account_type) seeded in every business, besides the bank accounts
CHART = (("Debtors Control", "1100", "CURRENT_ASSETS"), ("Sales Tax Control", "2200", "CURRENT_LIABILITY"),
         ("Purchase Tax Control", "2201", "CURRENT_LIABILITY"),
         ("Connected Accounts Payable", "2300", "CURRENT_LIABILITY"),
         ("Sales", "4000", "SALES"), ("Sales Refunds", "4010", "SALES"),
         ("Application Fee Revenue", "4100", "OTHER_INCOME"), ("Platform Fees", "4110", "DIRECT_EXPENSES"),
         ("Stripe Fees", "7900", "EXPENSES"), ("Chargebacks", "7910", "DIRECT_EXPENSES"),
         ("Dispute Fees", "7920", "OVERHEADS"), ("Stripe Adjustments", "7930", "OVERHEADS"),
         ("FX Gains and Losses", "7950", "EXPENSES"), ("FX Gain/Loss", "7960", "OVERHEADS"))
BANKS = (("Operating Bank", "1200"), ("Stripe Clearing", "1210"))


class SageTokenAuthority(TokenAuthority):
    """Sage's token endpoint: 5-minute access tokens, 31-day rotating refresh tokens."""

    def mint(self) -> dict:
        body = super().mint()
        body.pop("x_refresh_token_expires_in", None)
        body.update(refresh_token_expires_in=self.refresh_ttl, scope="full_access",
                    requested_by_id=self.client_id + "-user")
        return body


@dataclass
class Fault:
    method: str
    path: str                       # prefix of the path after /v3.1, e.g. "/contact_payments"
    status: int = 500
    times: int = 1
    retry_after: int | None = None
    after: bool = False             # do the work first, then fail (a lost response)
    delay: float = 0.0              # stall this long before answering


class ApiError(Exception):
    def __init__(self, status: int, data_code: str, message: str, source: str = ""):
        self.status, self.body = status, [{"$severity": "error", "$dataCode": data_code,
                                           "$message": message, "$source": source}]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: Any, source: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ApiError(422, "RecordInvalid", "is not a number", source) from None
    if not d.is_finite():
        raise ApiError(422, "RecordInvalid", "is not a number", source)
    return d.quantize(CENT)


def _to_base(amount: Decimal, rate: Decimal) -> Decimal:
    """A foreign amount in base currency: exchange_rate is foreign units per one base unit."""
    return (amount / rate).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class SageStandIn:
    client_id: str = "sage-client-id"
    client_secret: str = "sage-client-secret"
    business_id: str = "bizA0001"
    base_currency: str = "USD"
    multicurrency: bool = False                 # Financial Settings > "Enable foreign currency transactions"
    exchange_rates: dict[str, Any] = field(default_factory=dict)   # business rates: foreign units per 1 base
    fx_account: str = FX_GAIN_LOSS              # where realised exchange gains and losses post
    filler_ledger_accounts: int = 15            # 15 + 14 named + 2 banks = 31 ledger accounts
    faults: list[Fault] = field(default_factory=list)
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.authority = SageTokenAuthority(client_id=self.client_id, client_secret=self.client_secret,
                                            client_auth="body", access_ttl=300, refresh_ttl=2678400)
        self.businesses = {self.business_id: {"id": self.business_id, "name": "Demo Marketplace Ltd",
                                              "displayed_as": "Demo Marketplace Ltd", "$path": f"/businesses/{self.business_id}"},
                           "bizB0002": {"id": "bizB0002", "name": "Other Business", "displayed_as": "Other Business",
                                        "$path": "/businesses/bizB0002"}}
        self.data: dict[str, dict[str, dict[str, dict]]] = {b: {} for b in self.businesses}
        self.settings: dict[str, dict[str, Any]] = {}
        self.ledger: dict[str, list[JournalTxn]] = {b: [] for b in self.businesses}
        for b in self.businesses:
            self.settings[b] = {"base_currency": self.base_currency.upper(), "multicurrency": self.multicurrency,
                                "exchange_rates": {}, "fx_account": self.fx_account}
            self._set_rates(b, self.exchange_rates)
        self._seed(self.business_id)

    # ---- seed data -------------------------------------------------------------------

    def _put(self, business: str, resource: str, record: dict) -> dict:
        record.setdefault("id", uuid.uuid4().hex)
        record.setdefault("displayed_as", record.get("name") or record.get("reference") or record["id"])
        record["$path"] = f"/{resource}/{record['id']}"
        record.setdefault("created_at", _now())
        record["updated_at"] = _now()
        self.data[business].setdefault(resource, {})[record["id"]] = record
        return record

    def _ledger_account(self, business: str, name: str, code: str, kind: str) -> dict:
        for la in self.data[business].get("ledger_accounts", {}).values():
            if la["name"] == name:
                return la
        return self._put(business, "ledger_accounts", {
            "name": name, "display_name": name, "nominal_code": code, "displayed_as": f"{name} ({code})",
            "ledger_account_type": {"id": kind}, "visible_in_journals": True})

    def _seed(self, business: str) -> None:
        for name, code, kind in CHART:
            self._ledger_account(business, name, code, kind)
        for i in range(self.filler_ledger_accounts):
            self._ledger_account(business, f"Overheads {i:02d}", f"8{i:03d}", "OVERHEADS")
        for name, code in BANKS:
            self.add_bank_account(name, code, business=business)
        for rid, name, pct in (("US_NO_TAX", "No Tax", "0.00"), ("US_EXEMPT", "Exempt", "0.00"),
                               ("US_STANDARD", "Standard", "8.25")):
            self._put(business, "tax_rates", {"id": rid, "name": name, "percentage": pct, "is_visible": True})

    # ---- test controls --------------------------------------------------------------------

    def add_bank_account(self, name: str, code: str, *, currency: str | None = None,
                         business: str | None = None) -> dict:
        """A bank account (and its own ledger account of the same name), in ``currency`` (default base)."""
        business = business or self.business_id
        if any(b["bank_account_details"]["account_name"] == name for b in self.records("bank_accounts", business)):
            raise ValueError(f"bank account {name!r} exists")
        la = self._ledger_account(business, name, code, "CURRENT_ASSETS")
        return self._put(business, "bank_accounts", {
            "displayed_as": f"{name} ({code})", "nominal_code": code,
            "bank_account_details": {"account_name": name}, "ledger_account": {"id": la["id"]},
            "bank_account_type": {"id": "CHECKING"},
            "currency": {"id": (currency or self._base(business)).upper()}, "balance": Decimal("0.00")})

    def configure(self, business: str | None = None, *, base_currency: str | None = None,
                  multicurrency: bool | None = None, exchange_rates: dict[str, Any] | None = None,
                  fx_account: str | None = None) -> dict:
        """Financial settings of a business. The base currency can change only before anything has
        posted (Sage: "you can't delete your base currency"); base-currency bank accounts and
        contacts follow it."""
        business = business or self.business_id
        st = self.settings[business]
        if base_currency is not None and base_currency.upper() != st["base_currency"]:
            if self.ledger[business]:
                raise ValueError("the base currency cannot change once transactions have posted")
            old, new = st["base_currency"], base_currency.upper()
            for resource in ("bank_accounts", "contacts"):
                for r in self.records(resource, business):
                    if r["currency"]["id"] == old:
                        r["currency"] = {"id": new}
            st["base_currency"] = new
            if business == self.business_id:
                self.base_currency = new
        if multicurrency is not None:
            st["multicurrency"] = bool(multicurrency)
        if exchange_rates is not None:
            self._set_rates(business, exchange_rates)
        if fx_account is not None:
            st["fx_account"] = fx_account
        return dict(st)

    def _set_rates(self, business: str, rates: dict[str, Any]) -> None:
        for cur, rate in rates.items():
            d = Decimal(str(rate))
            if d <= 0:
                raise ValueError(f"exchange rate for {cur} must be > 0")
            self.settings[business]["exchange_rates"][cur.upper()] = d

    def seed_tokens(self) -> dict:
        return self.authority.seed()

    def expire_access_tokens(self) -> None:
        self.authority.expire_access()

    def fail(self, method: str, path: str, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        self.faults.append(Fault(method.upper(), path, status, times, retry_after))

    def lose_response(self, method: str, path: str, *, status: int = 500, delay: float = 0.0) -> None:
        self.faults.append(Fault(method.upper(), path, status, 1, None, after=True, delay=delay))

    def records(self, resource: str, business: str | None = None) -> list[dict]:
        return list(self.data[business or self.business_id].get(resource, {}).values())

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p, _ in self.calls if m == method and p.startswith(path_prefix))

    def journal(self, business: str | None = None) -> list[JournalTxn]:
        """What the business's books hold: one :class:`JournalTxn` per stored document, base currency."""
        with self.lock:
            return list(self.ledger[business or self.business_id])

    def trial_balance(self, business: str | None = None) -> TrialBalance:
        business = business or self.business_id
        return trial_balance(self.journal(business), self._base(business))

    # ---- HTTP ------------------------------------------------------------------------------

    def _fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.method == method and path.startswith(f.path) and f.times > 0:
                    f.times -= 1
                    return f
        return None

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != self.client_id or q.get("response_type") != "code":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = self.authority.issue_code(q["redirect_uri"])
        sep = "&" if "?" in q["redirect_uri"] else "?"
        return RedirectResponse(q["redirect_uri"] + sep + urllib.parse.urlencode(
            {"code": code, "state": q.get("state", ""), "country": "us"}), status_code=302)

    async def api(self, request: Request) -> Response:
        method, path = request.method, "/" + request.path_params["path"]
        status, body, headers, fault = 500, None, {}, None
        try:
            token = request.headers.get("authorization", "")
            if not token.startswith("Bearer ") or not self.authority.valid_access(token[7:]):
                raise ApiError(401, "AuthenticationFailure", "The access token is invalid or has expired")
            if path == "/businesses":
                status, body = 200, self._page(request, "businesses", list(self.businesses.values()))
                return JSONResponse(body, status_code=status)
            business = request.headers.get("x-business")
            if not business:
                raise ApiError(400, "MissingHeader", "the X-Business header is required", "X-Business")
            if business not in self.businesses:
                raise ApiError(404, "RecordNotFound", "no such business", "X-Business")
            fault = self._fault(method, path)
            if fault and not fault.after:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                code = "TooManyRequests" if fault.status == 429 else "ServiceUnavailable"
                raise ApiError(fault.status, code, "Try again later" if fault.status == 429 else "Service error")
            parts = [p for p in path.split("/") if p]
            if not parts:
                raise ApiError(404, "RecordNotFound", f"no endpoint {path}")
            resource = parts[0]
            if resource == "financial_settings" and len(parts) == 1 and method == "GET":
                st = self.settings[business]
                body = {"$path": "/financial_settings",
                        "base_currency": {"id": st["base_currency"], "displayed_as": st["base_currency"],
                                          "$path": f"/currencies/{st['base_currency']}"},
                        "multi_currency_enabled": st["multicurrency"], "use_live_exchange_rates": False}
                status = 200
                return Response(jsonio.dumps(body), status_code=200, media_type="application/json")
            store = self.data[business].setdefault(resource, {})
            if resource not in WRAPPERS and resource not in READ_ONLY:
                raise ApiError(404, "RecordNotFound", f"no endpoint {path}")
            if method == "GET" and len(parts) == 1:
                status, body = 200, self._list(request, resource, list(store.values()))
            elif method == "GET" and len(parts) == 2:
                if parts[1] not in store:
                    raise ApiError(404, "RecordNotFound", f"{resource} {parts[1]} not found")
                status, body = 200, store[parts[1]]
            elif method == "POST" and len(parts) == 1 and resource in WRAPPERS:
                payload = jsonio.loads((await request.body()) or b"{}")
                doc = payload.get(WRAPPERS[resource]) if isinstance(payload, dict) else None
                if not isinstance(doc, dict):
                    raise ApiError(422, "RecordInvalid", f"expected a {WRAPPERS[resource]} object",
                                   WRAPPERS[resource])
                with self.lock:
                    status, body = 201, getattr(self, f"_create_{resource}")(business, doc)
            else:
                raise ApiError(405, "MethodNotAllowed", f"{method} {path} is not allowed")
            if fault and fault.after:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                raise ApiError(fault.status, "ServiceUnavailable", "Service error")
        except ApiError as exc:
            status, body = exc.status, exc.body
        finally:
            with self.lock:
                self.calls.append((method, path, status))
        return Response(jsonio.dumps(body), status_code=status, media_type="application/json", headers=headers)

    # ---- lists ------------------------------------------------------------------------------

    def _page(self, request: Request, resource: str, rows: list[dict], *, project=None) -> dict:
        q = request.query_params
        try:
            per_page = int(q.get("items_per_page", 20))
            page = int(q.get("page", 1))
        except ValueError:
            raise ApiError(422, "RecordInvalid", "must be an integer", "items_per_page") from None
        if not 1 <= per_page <= 200:
            raise ApiError(422, "RecordInvalid", "must be between 1 and 200", "items_per_page")
        total = len(rows)
        chunk = rows[(page - 1) * per_page: page * per_page]

        def link(p: int) -> str:
            params = dict(q)
            params.update(page=str(p), items_per_page=str(per_page))
            return f"/{resource}?" + urllib.parse.urlencode(params)
        return {"$total": total, "$page": page, "$next": link(page + 1) if page * per_page < total else None,
                "$back": link(page - 1) if page > 1 else None, "$itemsPerPage": per_page,
                "$items": [project(r) if project else r for r in chunk]}

    def _list(self, request: Request, resource: str, rows: list[dict]) -> dict:
        q = request.query_params
        if q.get("search"):
            s = q["search"].lower()
            rows = [r for r in rows if any(s in str(r.get(k) or "").lower() for k in ("name", "reference", "email"))
                    or s in str((r.get("contact") or {}).get("displayed_as", "")).lower()]
        for param, getter in (("contact_id", lambda r: (r.get("contact") or {}).get("id")),
                              ("transaction_type_id", lambda r: (r.get("transaction_type") or {}).get("id")),
                              ("bank_account_id", lambda r: (r.get("bank_account") or {}).get("id"))):
            if q.get(param):
                rows = [r for r in rows if getter(r) == q[param]]
        if q.get("contact_type_id"):
            rows = [r for r in rows if q["contact_type_id"] in [t["id"] for t in r.get("contact_types", [])]]
        if q.get("from_date"):
            rows = [r for r in rows if str(r.get("date", "")) >= q["from_date"][:10]]
        if q.get("to_date"):
            rows = [r for r in rows if str(r.get("date", "")) <= q["to_date"][:10]]
        if q.get("updated_or_created_since"):
            since = q["updated_or_created_since"]
            rows = [r for r in rows if r["updated_at"] >= since[:19].replace(" ", "T")]
        wanted = q.get("attributes", "")

        def project(r: dict) -> dict:
            if wanted == "all":
                return r
            keep = {"id", "displayed_as", "$path"} | {a.strip() for a in wanted.split(",") if a.strip()}
            return {k: v for k, v in r.items() if k in keep}
        return self._page(request, resource, rows, project=project)

    # ---- creation and validation ------------------------------------------------------------

    def _ref(self, business: str, resource: str, key: Any, source: str) -> dict:
        if not key or not isinstance(key, str) or key not in self.data[business].get(resource, {}):
            raise ApiError(422, "RecordInvalid", "is invalid (no such record)", source)
        return self.data[business][resource][key]

    @staticmethod
    def _reference(doc: dict, required: bool = False) -> str | None:
        ref = doc.get("reference")
        if required and not ref:
            raise ApiError(422, "RecordInvalid", "can't be blank", "reference")
        if ref is not None and len(str(ref)) > REFERENCE_MAX:
            raise ApiError(422, "RecordInvalid", f"is too long (maximum is {REFERENCE_MAX} characters)", "reference")
        return ref

    @staticmethod
    def _require(doc: dict, *keys: str) -> None:
        for k in keys:
            if doc.get(k) in (None, "", []):
                raise ApiError(422, "RecordInvalid", "can't be blank", k)

    # ---- currencies -------------------------------------------------------------------------

    def _base(self, business: str) -> str:
        return self.settings[business]["base_currency"]

    def _currency(self, business: str, doc: dict, default: str) -> str:
        cur = doc.get("currency_id") or default
        if not isinstance(cur, str) or len(cur) != 3 or not cur.isalpha():
            raise ApiError(422, "RecordInvalid", "is not a currency", "currency_id")
        cur = cur.upper()
        if cur != self._base(business) and not self.settings[business]["multicurrency"]:
            raise ApiError(422, "RecordInvalid", f"{cur} is not the base currency "
                           f"{self._base(business)} and foreign currency transactions are not enabled",
                           "currency_id")
        return cur

    def _rate(self, business: str, currency: str, given: Any) -> Decimal:
        """exchange_rate: units of ``currency`` per one unit of base currency (1 for base)."""
        if currency == self._base(business):
            return Decimal(1)
        if given in (None, ""):
            given = self.settings[business]["exchange_rates"].get(currency)
            if given is None:
                raise ApiError(422, "RecordInvalid", f"can't be blank: no exchange rate for {currency}",
                               "exchange_rate")
        try:
            rate = Decimal(str(given))
        except (InvalidOperation, ValueError):
            raise ApiError(422, "RecordInvalid", "is not a number", "exchange_rate") from None
        if not rate.is_finite() or rate <= 0:
            raise ApiError(422, "RecordInvalid", "must be greater than 0", "exchange_rate")
        return rate

    def _check_bank_currency(self, business: str, bank: dict, currency: str, source: str) -> None:
        bank_cur = bank["currency"]["id"]
        if bank_cur != self._base(business) and bank_cur != currency:
            raise ApiError(422, "RecordInvalid", f"is a {bank_cur} bank account and cannot take {currency}", source)

    @staticmethod
    def _fx_fields(currency: str, rate: Decimal) -> dict:
        return {"currency": {"id": currency}, "exchange_rate": rate,
                "inverse_exchange_rate": (Decimal(1) / rate).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)}

    # ---- ledger postings -------------------------------------------------------------------------

    def _name(self, business: str, ledger_account_id: str) -> str:
        return self.data[business]["ledger_accounts"][ledger_account_id]["name"]

    def _bank_name(self, business: str, bank: dict) -> str:
        return self._name(business, bank["ledger_account"]["id"])

    def _post(self, business: str, record: dict, doc_type: str, currency: str,
              postings: list[tuple[str, Decimal, Decimal | None]], memo: str = "") -> None:
        """Book one document: postings are (account, base amount, foreign amount or None)."""
        foreign = currency != self._base(business)
        lines = [Posting(account, amount, currency if foreign else None, fx if foreign else None)
                 for account, amount, fx in postings if amount != 0 or (fx or 0) != 0]
        total = sum((p.amount for p in lines), Decimal(0))
        assert total == 0, f"stand-in posted an unbalanced {doc_type}: {lines}"
        self.ledger[business].append(JournalTxn(
            id=record["id"], date=str(record["date"])[:10], doc_type=doc_type, memo=memo or "",
            doc_number=record.get("reference"), postings=lines))

    # ---- documents -------------------------------------------------------------------------------

    def _create_contacts(self, business: str, doc: dict) -> dict:
        self._require(doc, "name", "contact_type_ids")
        if not isinstance(doc["contact_type_ids"], list):
            raise ApiError(422, "RecordInvalid", "must be a list", "contact_type_ids")
        ref = self._reference(doc)
        if ref and any(c.get("reference") == ref for c in self.records("contacts", business)):
            raise ApiError(422, "RecordInvalid", "has already been taken", "reference")
        currency = self._currency(business, doc, self._base(business))
        return self._put(business, "contacts", {
            "name": doc["name"], "reference": ref, "email": doc.get("email"),
            "contact_types": [{"id": t} for t in doc["contact_type_ids"]],
            "currency": {"id": currency}, "balance": Decimal("0.00")})

    def _lines(self, business: str, lines: Any, source: str, rate: Decimal) -> tuple[list[dict], Decimal, Decimal]:
        if not isinstance(lines, list) or not lines:
            raise ApiError(422, "RecordInvalid", "must have at least one line", source)
        out, net, tax = [], Decimal(0), Decimal(0)
        for i, line in enumerate(lines):
            where = f"{source}.{i}"
            if not isinstance(line, dict):
                raise ApiError(422, "RecordInvalid", "is invalid", where)
            for k in ("description", "ledger_account_id", "unit_price"):
                if line.get(k) in (None, ""):
                    raise ApiError(422, "RecordInvalid", "can't be blank", f"{where}.{k}")
            self._ref(business, "ledger_accounts", line["ledger_account_id"], f"{where}.ledger_account_id")
            pct = Decimal(0)
            if line.get("tax_rate_id"):
                pct = Decimal(self._ref(business, "tax_rates", line["tax_rate_id"], f"{where}.tax_rate_id")["percentage"])
            try:
                qty = Decimal(str(line.get("quantity", 1)))
            except (InvalidOperation, ValueError):
                raise ApiError(422, "RecordInvalid", "is not a number", f"{where}.quantity") from None
            line_net = _money(qty * _money(line["unit_price"], f"{where}.unit_price"), f"{where}.unit_price")
            line_tax = _money(line_net * pct / 100, f"{where}.tax_amount")
            net, tax = net + line_net, tax + line_tax
            base_net, base_tax = _to_base(line_net, rate), _to_base(line_tax, rate)
            out.append({**line, "net_amount": line_net, "tax_amount": line_tax, "total_amount": line_net + line_tax,
                        "base_currency_net_amount": base_net, "base_currency_tax_amount": base_tax,
                        "base_currency_total_amount": base_net + base_tax})
        return out, net, tax

    def _artefact(self, business: str, resource: str, doc: dict, lines_key: str) -> dict:
        self._require(doc, "contact_id", "date")
        contact = self._ref(business, "contacts", doc["contact_id"], "contact_id")
        ref = self._reference(doc)
        contact_currency = contact["currency"]["id"]
        currency = self._currency(business, doc, contact_currency)
        if currency != contact_currency:
            raise ApiError(422, "RecordInvalid", f"must be the contact's currency ({contact_currency}), not {currency}",
                           "currency_id")
        rate = self._rate(business, currency, doc.get("exchange_rate"))
        lines, net, tax = self._lines(business, doc.get(lines_key), lines_key, rate)
        base_net = sum((ln["base_currency_net_amount"] for ln in lines), Decimal(0))
        base_tax = sum((ln["base_currency_tax_amount"] for ln in lines), Decimal(0))
        record = {"reference": ref, "date": doc["date"], "contact": {"id": contact["id"],
                                                                    "displayed_as": contact["displayed_as"]},
                  **self._fx_fields(currency, rate),
                  "notes": doc.get("notes"), lines_key: lines, "net_amount": net, "tax_amount": tax,
                  "total_amount": net + tax, "outstanding_amount": net + tax,
                  "base_currency_net_amount": base_net, "base_currency_tax_amount": base_tax,
                  "base_currency_total_amount": base_net + base_tax,
                  "base_currency_outstanding_amount": base_net + base_tax, "status": {"id": "UNPAID"}}
        if doc.get("original_invoice_id"):
            self._ref(business, "sales_invoices", doc["original_invoice_id"], "original_invoice_id")
            record["original_invoice_id"] = doc["original_invoice_id"]
        kind = "SI" if resource == "sales_invoices" else "SCN"
        record["displayed_as"] = f"{kind}-{len(self.records(resource, business)) + 1}"
        stored = self._put(business, resource, record)
        sign = Decimal(1) if resource == "sales_invoices" else Decimal(-1)      # a credit note is the reverse
        postings = [(DEBTORS, sign * (base_net + base_tax), sign * (net + tax))]
        for ln in lines:
            postings.append((self._name(business, ln["ledger_account_id"]), -sign * ln["base_currency_net_amount"],
                             -sign * ln["net_amount"]))
        postings.append((SALES_TAX, -sign * base_tax, -sign * tax))
        self._post(business, stored, "SALES_INVOICE" if sign > 0 else "SALES_CREDIT_NOTE", currency, postings,
                   doc.get("notes") or "")
        return stored

    def _create_sales_invoices(self, business: str, doc: dict) -> dict:
        return self._artefact(business, "sales_invoices", doc, "invoice_lines")

    def _create_sales_credit_notes(self, business: str, doc: dict) -> dict:
        return self._artefact(business, "sales_credit_notes", doc, "credit_note_lines")

    def _create_contact_payments(self, business: str, doc: dict) -> dict:
        self._require(doc, "transaction_type_id", "contact_id", "bank_account_id", "date", "total_amount")
        types = {"CUSTOMER_RECEIPT": "sales_invoices", "CUSTOMER_REFUND": "sales_credit_notes"}
        if doc["transaction_type_id"] not in types:
            raise ApiError(422, "RecordInvalid", "is not included in the list", "transaction_type_id")
        contact = self._ref(business, "contacts", doc["contact_id"], "contact_id")
        bank = self._ref(business, "bank_accounts", doc["bank_account_id"], "bank_account_id")
        contact_currency = contact["currency"]["id"]
        currency = self._currency(business, doc, contact_currency)
        if currency != contact_currency:
            raise ApiError(422, "RecordInvalid", f"must be the contact's currency ({contact_currency}), not {currency}",
                           "currency_id")
        self._check_bank_currency(business, bank, currency, "bank_account_id")
        rate = self._rate(business, currency, doc.get("exchange_rate"))
        total = _money(doc["total_amount"], "total_amount")
        if total <= 0:
            raise ApiError(422, "RecordInvalid", "must be greater than 0", "total_amount")
        ref = self._reference(doc)
        allocated = Decimal(0)
        targets = []
        for i, a in enumerate(doc.get("allocated_artefacts") or []):
            if not isinstance(a, dict):
                raise ApiError(422, "RecordInvalid", "is invalid", f"allocated_artefacts.{i}")
            art = self._ref(business, types[doc["transaction_type_id"]], a.get("artefact_id"),
                            f"allocated_artefacts.{i}.artefact_id")
            amount = _money(a.get("amount"), f"allocated_artefacts.{i}.amount")
            if art["contact"]["id"] != contact["id"]:
                raise ApiError(422, "RecordInvalid", "belongs to another contact", f"allocated_artefacts.{i}.artefact_id")
            if amount <= 0:
                raise ApiError(422, "RecordInvalid", "must be greater than 0", f"allocated_artefacts.{i}.amount")
            if amount > art["outstanding_amount"] - sum((m for t, m in targets if t is art), Decimal(0)):
                raise ApiError(422, "RecordInvalid", "is more than the outstanding amount",
                               f"allocated_artefacts.{i}.amount")
            allocated += amount
            targets.append((art, amount))
        if allocated > total:
            raise ApiError(422, "RecordInvalid", "allocations exceed the total amount", "allocated_artefacts")
        # the debtors side: each allocation at its artefact's own rate, the rest at this payment's rate
        base_total = _to_base(total, rate)
        debtors = Decimal(0)
        for art, amount in targets:
            if amount == art["outstanding_amount"]:
                carried = art["base_currency_outstanding_amount"]
            else:
                carried = min(_to_base(amount, art["exchange_rate"]), art["base_currency_outstanding_amount"])
            art["outstanding_amount"] -= amount
            art["base_currency_outstanding_amount"] -= carried
            art["status"] = {"id": "PAID" if art["outstanding_amount"] == 0 else "PART_PAID"}
            art["updated_at"] = _now()
            debtors += carried
        unallocated = total - allocated
        if unallocated:
            debtors += base_total - _to_base(allocated, rate)
        stored = self._put(business, "contact_payments", {
            "transaction_type": {"id": doc["transaction_type_id"]}, "reference": ref, "date": doc["date"],
            "contact": {"id": contact["id"], "displayed_as": contact["displayed_as"]},
            "bank_account": {"id": bank["id"], "displayed_as": bank["displayed_as"]}, "total_amount": total,
            **self._fx_fields(currency, rate), "base_currency_total_amount": base_total,
            "allocated_artefacts": [{"artefact": {"id": art["id"]}, "amount": amt} for art, amt in targets]})
        sign = Decimal(1) if doc["transaction_type_id"] == "CUSTOMER_RECEIPT" else Decimal(-1)
        self._post(business, stored, doc["transaction_type_id"], currency, [
            (self._bank_name(business, bank), sign * base_total, sign * total),
            (DEBTORS, -sign * debtors, -sign * total),
            (self.settings[business]["fx_account"], -sign * (base_total - debtors), None)], ref or "")
        return stored

    def _create_other_payments(self, business: str, doc: dict) -> dict:
        self._require(doc, "transaction_type_id", "bank_account_id", "date", "total_amount", "payment_lines")
        if doc["transaction_type_id"] not in ("OTHER_PAYMENT", "OTHER_RECEIPT"):
            raise ApiError(422, "RecordInvalid", "is not included in the list", "transaction_type_id")
        if not isinstance(doc["payment_lines"], list):
            raise ApiError(422, "RecordInvalid", "must be a list", "payment_lines")
        bank = self._ref(business, "bank_accounts", doc["bank_account_id"], "bank_account_id")
        currency = self._currency(business, doc, bank["currency"]["id"])
        if currency != bank["currency"]["id"]:
            raise ApiError(422, "RecordInvalid", f"must be the bank account's currency ({bank['currency']['id']}), "
                           f"not {currency}", "currency_id")
        rate = self._rate(business, currency, doc.get("exchange_rate"))
        total = _money(doc["total_amount"], "total_amount")
        lines_total = base_total = Decimal(0)
        lines, postings = [], []
        receipt = doc["transaction_type_id"] == "OTHER_RECEIPT"
        sign = Decimal(-1) if receipt else Decimal(1)          # a payment debits its lines
        tax_account = SALES_TAX if receipt else PURCHASE_TAX
        for i, line in enumerate(doc["payment_lines"]):
            if not isinstance(line, dict):
                raise ApiError(422, "RecordInvalid", "is invalid", f"payment_lines.{i}")
            la = self._ref(business, "ledger_accounts", line.get("ledger_account_id"),
                           f"payment_lines.{i}.ledger_account_id")
            if line.get("tax_rate_id"):
                self._ref(business, "tax_rates", line["tax_rate_id"], f"payment_lines.{i}.tax_rate_id")
            line_total = _money(line.get("total_amount"), f"payment_lines.{i}.total_amount")
            line_tax = _money(line.get("tax_amount") or 0, f"payment_lines.{i}.tax_amount")
            line_net = (_money(line["net_amount"], f"payment_lines.{i}.net_amount")
                        if line.get("net_amount") not in (None, "") else line_total - line_tax)
            if line_net + line_tax != line_total:
                raise ApiError(422, "RecordInvalid", "does not equal net_amount plus tax_amount",
                               f"payment_lines.{i}.total_amount")
            base_net, base_tax = _to_base(line_net, rate), _to_base(line_tax, rate)
            lines_total += line_total
            base_total += base_net + base_tax
            lines.append({**line, "net_amount": line_net, "tax_amount": line_tax, "total_amount": line_total,
                          "base_currency_net_amount": base_net, "base_currency_tax_amount": base_tax,
                          "base_currency_total_amount": base_net + base_tax})
            postings.append((la["name"], sign * base_net, sign * line_net))
            postings.append((tax_account, sign * base_tax, sign * line_tax))
        if lines_total != total:
            raise ApiError(422, "RecordInvalid", "does not equal the sum of the payment lines", "total_amount")
        stored = self._put(business, "other_payments", {
            "transaction_type": {"id": doc["transaction_type_id"]}, "reference": self._reference(doc),
            "date": doc["date"], "bank_account": {"id": bank["id"], "displayed_as": bank["displayed_as"]},
            "contact": ({"id": doc["contact_id"]} if doc.get("contact_id") else None),
            "total_amount": total, **self._fx_fields(currency, rate), "base_currency_total_amount": base_total,
            "payment_lines": lines})
        postings.append((self._bank_name(business, bank), -sign * base_total, -sign * total))
        self._post(business, stored, doc["transaction_type_id"], currency, postings, stored.get("reference") or "")
        return stored

    def _create_journals(self, business: str, doc: dict) -> dict:
        self._require(doc, "date", "journal_lines")
        ref = self._reference(doc, required=True)
        if doc.get("currency_id") and str(doc["currency_id"]).upper() != self._base(business):
            raise ApiError(422, "RecordInvalid", f"journals are posted in the base currency "
                           f"({self._base(business)}) only", "currency_id")
        if not isinstance(doc["journal_lines"], list):
            raise ApiError(422, "RecordInvalid", "must be a list", "journal_lines")
        debit = credit = Decimal(0)
        postings = []
        for i, line in enumerate(doc["journal_lines"]):
            if not isinstance(line, dict):
                raise ApiError(422, "RecordInvalid", "is invalid", f"journal_lines.{i}")
            la = self._ref(business, "ledger_accounts", line.get("ledger_account_id"),
                           f"journal_lines.{i}.ledger_account_id")
            d = _money(line.get("debit") or 0, f"journal_lines.{i}.debit")
            c = _money(line.get("credit") or 0, f"journal_lines.{i}.credit")
            if d < 0 or c < 0:
                raise ApiError(422, "RecordInvalid", "must be greater than or equal to 0", f"journal_lines.{i}")
            debit, credit = debit + d, credit + c
            postings.append((la["name"], d - c, None))
        if len(doc["journal_lines"]) < 2 or debit != credit:
            raise ApiError(422, "RecordInvalid", "the total debits must equal the total credits", "journal_lines")
        stored = self._put(business, "journals", {"date": doc["date"], "reference": ref,
                                                  "description": doc.get("description"), "total": debit,
                                                  "journal_lines": doc["journal_lines"]})
        self._post(business, stored, "JOURNAL", self._base(business), postings, doc.get("description") or "")
        return stored

    def _create_bank_transfers(self, business: str, doc: dict) -> dict:
        self._require(doc, "from_bank_account_id", "to_bank_account_id", "date", "amount")
        src = self._ref(business, "bank_accounts", doc["from_bank_account_id"], "from_bank_account_id")
        dst = self._ref(business, "bank_accounts", doc["to_bank_account_id"], "to_bank_account_id")
        if src["id"] == dst["id"]:
            raise ApiError(422, "RecordInvalid", "must be different from the from bank account", "to_bank_account_id")
        if src["currency"]["id"] != dst["currency"]["id"]:
            raise ApiError(422, "RecordInvalid", f"is a {dst['currency']['id']} bank account; the from bank account "
                           f"is {src['currency']['id']}", "to_bank_account_id")
        currency = self._currency(business, {}, src["currency"]["id"])
        rate = self._rate(business, currency, doc.get("exchange_rate"))
        amount = _money(doc["amount"], "amount")
        if amount <= 0:
            raise ApiError(422, "RecordInvalid", "must be greater than 0", "amount")
        base = _to_base(amount, rate)
        stored = self._put(business, "bank_transfers", {
            "from_bank_account": {"id": src["id"]}, "to_bank_account": {"id": dst["id"]}, "date": doc["date"],
            "amount": amount, "reference": self._reference(doc), "description": doc.get("description")})
        self._post(business, stored, "BANK_TRANSFER", currency, [
            (self._bank_name(business, dst), base, amount), (self._bank_name(business, src), -base, -amount)],
            doc.get("description") or "")
        return stored

    # ---- the app ------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/token", self.authority.token, methods=["POST"]),
            Route("/oauth2/auth/central", self.authorize, methods=["GET"]),
            Route("/v3.1/{path:path}", self.api, methods=["GET", "POST"]),
        ])



def connection_config(url: str, **extra: Any) -> dict:
    """A ``sage`` connection pointing at a running stand-in (secrets from SAGE_* env references)."""
    return {"type": "sage", "base_url": f"{url}/v3.1", "token_url": f"{url}/token",
            "authorize_url": f"{url}/oauth2/auth/central?filter=apiv3.1",
            "client_id": {"env": "SAGE_CLIENT_ID"}, "client_secret": {"env": "SAGE_CLIENT_SECRET"}, **extra}
