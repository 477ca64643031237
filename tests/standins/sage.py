"""A local stand-in for Sage Business Cloud Accounting (API v3.1), as Sage documents it.

* OAuth 2: ``/token`` takes the client id and secret in the form body; access
  tokens live 300 s; refresh tokens rotate at every use (a spent one answers
  ``400 invalid_grant``); ``/oauth2/auth/central`` redirects back with a code.
* ``/v3.1/...``: Bearer token required (``401`` once it has expired), and the
  ``X-Business`` header selecting the business (this stand-in insists on it).
* Lists: ``items_per_page`` (1..200, default 20) and ``page``; answers
  ``{$total, $page, $next, $back, $itemsPerPage, $items}``; items carry
  ``id``, ``displayed_as`` and ``$path`` plus what ``attributes`` asks for.
  Filters: ``search``, ``contact_id``, ``contact_type_id``, ``transaction_type_id``,
  ``bank_account_id``, ``from_date``/``to_date``, ``updated_or_created_since``.
* Errors: a JSON list of ``{$severity, $dataCode, $message, $source}``; 422 on
  invalid data, 404 for an unknown key, 429 with ``Retry-After`` and 5xx on demand.
* ``lose_response``: create the record, then fail or stall, as a lost response does.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from runner import jsonio
from tests.standins.oauth_server import TokenAuthority

REFERENCE_MAX = 25
WRAPPERS = {"contacts": "contact", "sales_invoices": "sales_invoice", "sales_credit_notes": "sales_credit_note",
            "contact_payments": "contact_payment", "other_payments": "other_payment", "journals": "journal",
            "bank_transfers": "bank_transfer"}
READ_ONLY = ("ledger_accounts", "tax_rates", "bank_accounts")


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
    return d.quantize(Decimal("0.01"))


@dataclass
class SageStandIn:
    client_id: str = "sage-client-id"
    client_secret: str = "sage-client-secret"
    business_id: str = "bizA0001"
    base_currency: str = "USD"
    filler_ledger_accounts: int = 25
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

    def _seed(self, business: str) -> None:
        def ledger(name: str, code: str, kind: str) -> dict:
            return self._put(business, "ledger_accounts", {
                "name": name, "display_name": name, "nominal_code": code, "displayed_as": f"{name} ({code})",
                "ledger_account_type": {"id": kind}, "visible_in_journals": True})
        for name, code, kind in (("Sales", "4000", "SALES"), ("Sales Refunds", "4010", "SALES"),
                                 ("Stripe Fees", "7900", "EXPENSES"), ("FX Gains and Losses", "7950", "EXPENSES")):
            ledger(name, code, kind)
        for i in range(self.filler_ledger_accounts):
            ledger(f"Overheads {i:02d}", f"8{i:03d}", "OVERHEADS")
        for name, code in (("Operating Bank", "1200"), ("Stripe Clearing", "1210")):
            la = ledger(name, code, "CURRENT_ASSETS")
            self._put(business, "bank_accounts", {
                "displayed_as": f"{name} ({code})", "nominal_code": code,
                "bank_account_details": {"account_name": name}, "ledger_account": {"id": la["id"]},
                "bank_account_type": {"id": "CHECKING"}, "currency": {"id": self.base_currency}, "balance": "0.00"})
        for rid, name, pct in (("US_NO_TAX", "No Tax", "0.00"), ("US_EXEMPT", "Exempt", "0.00"),
                               ("US_STANDARD", "Standard", "8.25")):
            self._put(business, "tax_rates", {"id": rid, "name": name, "percentage": pct, "is_visible": True})

    # ---- test controls --------------------------------------------------------------------

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
            resource = parts[0]
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
        if not key or key not in self.data[business].get(resource, {}):
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

    def _create_contacts(self, business: str, doc: dict) -> dict:
        self._require(doc, "name", "contact_type_ids")
        ref = self._reference(doc)
        if ref and any(c.get("reference") == ref for c in self.records("contacts", business)):
            raise ApiError(422, "RecordInvalid", "has already been taken", "reference")
        return self._put(business, "contacts", {
            "name": doc["name"], "reference": ref, "email": doc.get("email"),
            "contact_types": [{"id": t} for t in doc["contact_type_ids"]],
            "currency": {"id": doc.get("currency_id") or self.base_currency}, "balance": "0.00"})

    def _lines(self, business: str, lines: Any, source: str) -> tuple[list[dict], Decimal, Decimal]:
        if not isinstance(lines, list) or not lines:
            raise ApiError(422, "RecordInvalid", "must have at least one line", source)
        out, net, tax = [], Decimal(0), Decimal(0)
        for i, line in enumerate(lines):
            where = f"{source}.{i}"
            for k in ("description", "ledger_account_id", "unit_price"):
                if line.get(k) in (None, ""):
                    raise ApiError(422, "RecordInvalid", "can't be blank", f"{where}.{k}")
            self._ref(business, "ledger_accounts", line["ledger_account_id"], f"{where}.ledger_account_id")
            pct = Decimal(0)
            if line.get("tax_rate_id"):
                pct = Decimal(self._ref(business, "tax_rates", line["tax_rate_id"], f"{where}.tax_rate_id")["percentage"])
            qty = Decimal(str(line.get("quantity", 1)))
            line_net = _money(qty * _money(line["unit_price"], f"{where}.unit_price"), f"{where}.unit_price")
            line_tax = _money(line_net * pct / 100, f"{where}.tax_amount")
            net, tax = net + line_net, tax + line_tax
            out.append({**line, "net_amount": line_net, "tax_amount": line_tax, "total_amount": line_net + line_tax})
        return out, net, tax

    def _artefact(self, business: str, resource: str, doc: dict, lines_key: str) -> dict:
        self._require(doc, "contact_id", "date")
        contact = self._ref(business, "contacts", doc["contact_id"], "contact_id")
        ref = self._reference(doc)
        currency = doc.get("currency_id") or self.base_currency
        if currency != self.base_currency and not doc.get("exchange_rate"):
            raise ApiError(422, "RecordInvalid", "is required for a foreign currency", "exchange_rate")
        lines, net, tax = self._lines(business, doc.get(lines_key), lines_key)
        record = {"reference": ref, "date": doc["date"], "contact": {"id": contact["id"],
                                                                    "displayed_as": contact["displayed_as"]},
                  "currency": {"id": currency}, "exchange_rate": doc.get("exchange_rate"),
                  "notes": doc.get("notes"), lines_key: lines, "net_amount": net, "tax_amount": tax,
                  "total_amount": net + tax, "outstanding_amount": net + tax, "status": {"id": "UNPAID"}}
        if doc.get("original_invoice_id"):
            self._ref(business, "sales_invoices", doc["original_invoice_id"], "original_invoice_id")
            record["original_invoice_id"] = doc["original_invoice_id"]
        kind = "SI" if resource == "sales_invoices" else "SCN"
        record["displayed_as"] = f"{kind}-{len(self.records(resource, business)) + 1}"
        return self._put(business, resource, record)

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
        total = _money(doc["total_amount"], "total_amount")
        if total <= 0:
            raise ApiError(422, "RecordInvalid", "must be greater than 0", "total_amount")
        ref = self._reference(doc)
        allocated = Decimal(0)
        targets = []
        for i, a in enumerate(doc.get("allocated_artefacts") or []):
            art = self._ref(business, types[doc["transaction_type_id"]], a.get("artefact_id"),
                            f"allocated_artefacts.{i}.artefact_id")
            amount = _money(a.get("amount"), f"allocated_artefacts.{i}.amount")
            if art["contact"]["id"] != contact["id"]:
                raise ApiError(422, "RecordInvalid", "belongs to another contact", f"allocated_artefacts.{i}.artefact_id")
            if amount > art["outstanding_amount"]:
                raise ApiError(422, "RecordInvalid", "is more than the outstanding amount",
                               f"allocated_artefacts.{i}.amount")
            allocated += amount
            targets.append((art, amount))
        if allocated > total:
            raise ApiError(422, "RecordInvalid", "allocations exceed the total amount", "allocated_artefacts")
        for art, amount in targets:
            art["outstanding_amount"] -= amount
            art["status"] = {"id": "PAID" if art["outstanding_amount"] == 0 else "PART_PAID"}
        return self._put(business, "contact_payments", {
            "transaction_type": {"id": doc["transaction_type_id"]}, "reference": ref, "date": doc["date"],
            "contact": {"id": contact["id"], "displayed_as": contact["displayed_as"]},
            "bank_account": {"id": bank["id"], "displayed_as": bank["displayed_as"]}, "total_amount": total,
            "allocated_artefacts": [{"artefact": {"id": art["id"]}, "amount": amt} for art, amt in targets]})

    def _create_other_payments(self, business: str, doc: dict) -> dict:
        self._require(doc, "transaction_type_id", "bank_account_id", "date", "total_amount", "payment_lines")
        if doc["transaction_type_id"] not in ("OTHER_PAYMENT", "OTHER_RECEIPT"):
            raise ApiError(422, "RecordInvalid", "is not included in the list", "transaction_type_id")
        bank = self._ref(business, "bank_accounts", doc["bank_account_id"], "bank_account_id")
        total = _money(doc["total_amount"], "total_amount")
        lines_total = Decimal(0)
        for i, line in enumerate(doc["payment_lines"]):
            self._ref(business, "ledger_accounts", line.get("ledger_account_id"), f"payment_lines.{i}.ledger_account_id")
            if line.get("tax_rate_id"):
                self._ref(business, "tax_rates", line["tax_rate_id"], f"payment_lines.{i}.tax_rate_id")
            lines_total += _money(line.get("total_amount"), f"payment_lines.{i}.total_amount")
        if lines_total != total:
            raise ApiError(422, "RecordInvalid", "does not equal the sum of the payment lines", "total_amount")
        return self._put(business, "other_payments", {
            "transaction_type": {"id": doc["transaction_type_id"]}, "reference": self._reference(doc),
            "date": doc["date"], "bank_account": {"id": bank["id"], "displayed_as": bank["displayed_as"]},
            "total_amount": total, "payment_lines": doc["payment_lines"]})

    def _create_journals(self, business: str, doc: dict) -> dict:
        self._require(doc, "date", "journal_lines")
        ref = self._reference(doc, required=True)
        debit = credit = Decimal(0)
        for i, line in enumerate(doc["journal_lines"]):
            self._ref(business, "ledger_accounts", line.get("ledger_account_id"), f"journal_lines.{i}.ledger_account_id")
            debit += _money(line.get("debit", 0), f"journal_lines.{i}.debit")
            credit += _money(line.get("credit", 0), f"journal_lines.{i}.credit")
        if len(doc["journal_lines"]) < 2 or debit != credit:
            raise ApiError(422, "RecordInvalid", "the total debits must equal the total credits", "journal_lines")
        return self._put(business, "journals", {"date": doc["date"], "reference": ref,
                                                "description": doc.get("description"), "total": debit,
                                                "journal_lines": doc["journal_lines"]})

    def _create_bank_transfers(self, business: str, doc: dict) -> dict:
        self._require(doc, "from_bank_account_id", "to_bank_account_id", "date", "amount")
        src = self._ref(business, "bank_accounts", doc["from_bank_account_id"], "from_bank_account_id")
        dst = self._ref(business, "bank_accounts", doc["to_bank_account_id"], "to_bank_account_id")
        if src["id"] == dst["id"]:
            raise ApiError(422, "RecordInvalid", "must be different from the from bank account", "to_bank_account_id")
        amount = _money(doc["amount"], "amount")
        if amount <= 0:
            raise ApiError(422, "RecordInvalid", "must be greater than 0", "amount")
        return self._put(business, "bank_transfers", {
            "from_bank_account": {"id": src["id"]}, "to_bank_account": {"id": dst["id"]}, "date": doc["date"],
            "amount": amount, "reference": self._reference(doc), "description": doc.get("description")})

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
