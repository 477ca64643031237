"""Sage Accounting connector: contacts, invoices and payments, credit notes and refunds,
other payments, journals and bank transfers.

Config (``connections.NAME`` in ledgerflow.yaml)::

    type: sage
    client_id: {env: SAGE_CLIENT_ID}
    client_secret: {env: SAGE_CLIENT_SECRET}
    business_id: "..."          # X-Business; default: the one chosen at `ledgerflow connect`
    base_url, token_url, authorize_url, redirect_uri   # Sage's by default
    timeout: 30                 # seconds per request
    page_size: 200              # items_per_page for lists (Sage allows up to 200)
    lookup_ttl: 3600            # seconds ledger accounts, tax rates and bank accounts stay cached
    refresh_margin: 60          # refresh the 5-minute access token this long before it expires
    journal_lookback_days: 35   # how far back a repeat looks for a journal it may have created

Idempotency: every document carries a reference derived from the operation's
key (``references.short_reference``); before creating one, the connector looks
for it by that reference, so a repeat after a lost response creates nothing new.
A charge is several calls (contact, invoice, receipt); each is found or
created, so a retry after a partial failure completes the rest.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Mapping

from connectors.base import Connector, ErrorKind, Item, LedgerflowError, Outcome, TargetError

from .actions import ACTIONS
from .client import DEFAULT_BASE_URL, SageClient
from .lookups import Lookups
from .references import REFERENCE_MAX, short_reference

TOKEN_URL = "https://oauth.accounting.sage.com/token"
AUTHORIZE_URL = "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1"


def oauth_defaults(name: str) -> dict[str, Any]:
    return {"token_url": TOKEN_URL, "authorize_url": AUTHORIZE_URL, "client_auth": "body",
            "scopes": ["full_access"], "redirect_uri": "http://localhost:8766/callback",
            "reconnect_hint": f"run `ledgerflow connect sage --connection {name}`"}


def oauth_config(name: str, cfg: Mapping[str, Any], secrets: Any):
    """The connection's OAuth 2 settings (Sage's endpoints unless overridden)."""
    from connectors.oauth import OAuthConfig
    return OAuthConfig.from_connection(name, cfg, secrets, defaults=oauth_defaults(name))


class SageConnector(Connector):
    type = "sage"
    actions = ACTIONS

    def __init__(self, name: str, config: Mapping[str, Any], runtime: Any):
        super().__init__(name, config, runtime)
        self._client: SageClient | None = None
        self._lookups: Lookups | None = None
        self._contacts: dict[tuple[str, str], str] = {}   # (contact reference, currency) -> id, for this process

    # ---- set-up (lazy, so a missing secret fails the items, not the import) ----------------

    def session(self):
        from connectors.oauth import OAuthSession
        oauth = oauth_config(self.name, self.config, self.runtime.secrets)
        return OAuthSession(self.name, oauth, self.runtime.tokens,
                            margin=float(self.config.get("refresh_margin", 60)))

    @property
    def client(self) -> SageClient:
        if self._client is None:
            try:
                session = self.session()
            except LedgerflowError as exc:
                raise TargetError(f"connection {self.name}: {exc}", ErrorKind.AUTH) from None
            business = self.config.get("business_id")
            if business is not None and not isinstance(business, str):
                business = self.runtime.secrets.resolve(business, f"connections.{self.name}.business_id")
            self._client = SageClient(session, base_url=self.config.get("base_url", DEFAULT_BASE_URL),
                                      business_id=business, timeout=float(self.config.get("timeout", 30)),
                                      page_size=int(self.config.get("page_size", 200)))
        return self._client

    @property
    def lookups(self) -> Lookups:
        if self._lookups is None:
            business = self.client.business_id or "default"
            self._lookups = Lookups(self.client, self.runtime.cache, f"sage:{self.name}:{business}",
                                    ttl=float(self.config.get("lookup_ttl", 3600)))
        return self._lookups

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ---- delivery -------------------------------------------------------------------------

    def deliver(self, items: list[Item]) -> list[Outcome]:
        handlers: dict[str, Callable[[Item], Outcome]] = {
            "contact": self._contact_item, "sales_invoice_payment": self._sales_invoice_payment,
            "credit_note_refund": self._credit_note_refund, "other_payment": self._other_payment,
            "journal": self._journal, "bank_transfer": self._bank_transfer}
        outcomes = []
        for item in items:
            handler = handlers.get(item.action)
            if handler is None:
                outcomes.append(Outcome.failed(item, TargetError(
                    f"sage has no action {item.action!r} (known: {', '.join(sorted(handlers))})", ErrorKind.PERMANENT)))
                continue
            try:
                outcomes.append(handler(item))
            except TargetError as exc:
                outcomes.append(Outcome.failed(item, exc))
        return outcomes

    # ---- building blocks ----------------------------------------------------------------------

    def _resolve(self, resource: str, value: str, field: str) -> str:
        return self.lookups.resolve(resource, value, field)

    def _find_or_create(self, resource: str, wrapper: str, reference: str, find_params: Mapping[str, Any],
                        build: Callable[[], dict]) -> tuple[dict, bool]:
        """(record, created): the document with this reference, created when it is not there yet."""
        found = self.client.find_by_reference(resource, reference, find_params)
        if found is not None:
            return found, False
        return self.client.create(resource, wrapper, {**build(), "reference": reference}), True

    def contact_id(self, contact: Mapping[str, Any]) -> str:
        """Find the customer by reference (and currency), or create it with that currency (a concurrent
        create is found on repeat). Sage ties a contact to one currency: a contact found under the
        reference but in another currency is a PERMANENT error, never silently used."""
        reference = short_reference(str(contact["reference"]), limit=REFERENCE_MAX)
        currency = str(contact.get("currency") or "").upper()
        if (reference, currency) in self._contacts:
            return self._contacts[(reference, currency)]
        params = {"search": reference, "contact_type_id": "CUSTOMER"}
        found = self.client.find_by_reference("contacts", reference, params, attributes="currency")
        if found is None:
            doc = {"name": contact["name"], "contact_type_ids": ["CUSTOMER"], "reference": reference}
            if contact.get("email"):
                doc["email"] = contact["email"]
            if currency:
                doc["currency_id"] = currency
            try:
                found = self.client.create("contacts", "contact", doc)
            except TargetError as exc:
                if exc.field != "reference":
                    raise
                found = self.client.find_by_reference("contacts", reference, params,
                                                      attributes="currency")   # another worker made it
                if found is None:
                    raise
        have = str(((found.get("currency") or {}) if isinstance(found.get("currency"), Mapping)
                    else {"id": found.get("currency")}).get("id") or "").upper()
        if currency and have and have != currency:
            raise TargetError(f"contact.reference: the Sage contact {reference!r} is a {have} contact and this "
                              f"document is in {currency}; Sage ties a contact to one currency (give each currency "
                              "its own contact reference, as the shipped mappings do: cus_...-EUR)",
                              ErrorKind.PERMANENT, field="contact.reference")
        self._contacts[(reference, currency)] = found["id"]
        return found["id"]

    def _lines(self, lines: list[Mapping[str, Any]], field: str) -> list[dict]:
        out = []
        for i, line in enumerate(lines):
            doc = {"description": line["description"], "quantity": line.get("quantity", 1),
                   "unit_price": line["unit_price"],
                   "ledger_account_id": self._resolve("ledger_accounts", line["ledger_account"],
                                                      f"{field}[{i}].ledger_account")}
            if line.get("tax_rate"):
                doc["tax_rate_id"] = self._resolve("tax_rates", line["tax_rate"], f"{field}[{i}].tax_rate")
            out.append(doc)
        return out

    @staticmethod
    def _money_doc(p: Mapping[str, Any]) -> dict:
        doc: dict[str, Any] = {}
        if p.get("currency"):
            doc["currency_id"] = p["currency"]
        if p.get("exchange_rate") is not None:
            doc["exchange_rate"] = p["exchange_rate"]
        if p.get("notes"):
            doc["notes"] = p["notes"]
        return doc

    def _allocated_payment(self, key: str, part: str, kind: str, contact_id: str, artefact_id: str,
                           pay: Mapping[str, Any], default_date: str, field: str,
                           doc: Mapping[str, Any]) -> tuple[dict, bool]:
        """A receipt or refund allocated to its artefact, in the artefact's currency at its exchange rate
        (Sage: a contact payment is in its contact's currency; a foreign one needs its rate)."""
        date = pay.get("date") or default_date
        money = {k: v for k, v in self._money_doc(doc).items() if k in ("currency_id", "exchange_rate")}
        bank = self._resolve("bank_accounts", pay["bank_account"], f"{field}.bank_account")
        ref = short_reference(key, part)
        return self._find_or_create(
            "contact_payments", "contact_payment", ref,
            {"contact_id": contact_id, "transaction_type_id": kind, "from_date": date, "to_date": date},
            lambda: {"transaction_type_id": kind, "contact_id": contact_id, "bank_account_id": bank, "date": date,
                     "total_amount": pay["amount"], **money,
                     "allocated_artefacts": [{"artefact_id": artefact_id, "amount": pay["amount"]}]})

    def _fees(self, key: str, fees: Mapping[str, Any] | None, default_date: str) -> tuple[list[str], list[bool]]:
        """Stripe's fees booked with their movement: positive lines as one other payment out of the bank
        account, negative ones (fees returned) as one other receipt; each found or created by reference."""
        if not fees:
            return [], []
        date = fees.get("date") or default_date
        bank = self._resolve("bank_accounts", fees["bank_account"], "fees.bank_account")
        refs, made = [], []
        for kind, part, sign in (("OTHER_PAYMENT", "fee", 1), ("OTHER_RECEIPT", "fee_refund", -1)):
            lines, total = [], Decimal(0)
            for i, line in enumerate(fees["lines"]):
                amount = Decimal(str(line["amount"])) * sign
                if amount <= 0:
                    continue
                doc = {"ledger_account_id": self._resolve("ledger_accounts", line["ledger_account"],
                                                          f"fees.lines[{i}].ledger_account"),
                       "total_amount": amount, "net_amount": amount, "tax_amount": 0}
                if line.get("details"):
                    doc["details"] = line["details"]
                lines.append(doc)
                total += amount
            if not lines:
                continue
            record, created = self._find_or_create(
                "other_payments", "other_payment", short_reference(key, part),
                {"bank_account_id": bank, "transaction_type_id": kind, "from_date": date, "to_date": date},
                lambda kind=kind, lines=lines, total=total: {
                    "transaction_type_id": kind, "date": date, "total_amount": total, "bank_account_id": bank,
                    "payment_lines": lines})
            refs.append(f"other_payment:{record['id']}")
            made.append(created)
        return refs, made

    # ---- actions ----------------------------------------------------------------------------------

    def _contact_item(self, item: Item) -> Outcome:
        return Outcome.sent(item, f"contact:{self.contact_id(item.payload)}")

    def _sales_invoice_payment(self, item: Item) -> Outcome:
        p, key = item.payload, item.idempotency_key
        contact = self.contact_id(p["contact"])
        lines = self._lines(p["lines"], "lines")
        ref = short_reference(key, "invoice")
        invoice, created = self._find_or_create(
            "sales_invoices", "sales_invoice", ref,
            {"search": ref, "contact_id": contact, "from_date": p["date"], "to_date": p["date"]},
            lambda: {"contact_id": contact, "date": p["date"], "invoice_lines": lines, **self._money_doc(p)})
        target = f"sales_invoice:{invoice['id']}"
        new = [created]
        if p.get("payment"):
            payment, made = self._allocated_payment(key, "payment", "CUSTOMER_RECEIPT", contact, invoice["id"],
                                                    p["payment"], p["date"], "payment", p)
            target += f" contact_payment:{payment['id']}"
            new.append(made)
        refs, made_fees = self._fees(key, p.get("fees"), p["date"])
        target += "".join(" " + r for r in refs)
        new.extend(made_fees)
        return Outcome.sent(item, target, duplicate=not any(new))

    def _credit_note_refund(self, item: Item) -> Outcome:
        """A refund goes on the refunded charge's contact (its invoice's, so the same currency) when that
        invoice is found, else on ``contact``; the customer refund on the credit note's own contact."""
        p, key = item.payload, item.idempotency_key
        lines = self._lines(p["lines"], "lines")
        ref = short_reference(key, "credit_note")
        # a repeat finds the credit note by reference alone (the invoice may have been booked since)
        note = self.client.find_by_reference("sales_credit_notes", ref,
                                             {"search": ref, "from_date": p["date"], "to_date": p["date"]},
                                             attributes="contact,original_invoice_id")
        created = False
        original = None
        if note is None:
            if p.get("original_invoice_key"):
                oref = short_reference(str(p["original_invoice_key"]), "invoice")
                original = self.client.find_by_reference("sales_invoices", oref, {"search": oref},
                                                         attributes="contact,currency")
            if original is not None and (original.get("contact") or {}).get("id"):
                contact = original["contact"]["id"]
                have = str((original.get("currency") or {}).get("id") or "").upper()
                want = str(p.get("currency") or (p["contact"].get("currency") or "")).upper()
                if have and want and have != want:
                    raise TargetError(f"original_invoice_key: the refunded charge's invoice is in {have}, this "
                                      f"refund in {want}; a refund goes on the charge's contact, in its currency",
                                      ErrorKind.PERMANENT, field="currency")
            else:
                original = None
                contact = self.contact_id(p["contact"])
            doc = {"contact_id": contact, "date": p["date"], "credit_note_lines": lines, **self._money_doc(p)}
            if original is not None:
                doc["original_invoice_id"] = original["id"]
            note = self.client.create("sales_credit_notes", "sales_credit_note", {**doc, "reference": ref})
            created = True
        contact = (note.get("contact") or {}).get("id") or self.contact_id(p["contact"])
        linked = bool(note.get("original_invoice_id")) if original is None else True
        target = f"sales_credit_note:{note['id']}"
        new = [created]
        if p.get("refund"):
            refund, made = self._allocated_payment(key, "refund", "CUSTOMER_REFUND", contact, note["id"],
                                                   p["refund"], p["date"], "refund", p)
            target += f" contact_payment:{refund['id']}"
            new.append(made)
        refs, made_fees = self._fees(key, p.get("fees"), p["date"])
        target += "".join(" " + r for r in refs)
        new.extend(made_fees)
        return Outcome.sent(item, target, duplicate=not any(new), linked_invoice=linked)

    def _other_payment(self, item: Item) -> Outcome:
        p = item.payload
        kind = p.get("transaction_type", "OTHER_PAYMENT")
        bank = self._resolve("bank_accounts", p["bank_account"], "bank_account")
        lines = []
        for i, line in enumerate(p["lines"]):
            doc = {"ledger_account_id": self._resolve("ledger_accounts", line["ledger_account"],
                                                      f"lines[{i}].ledger_account"),
                   "total_amount": line["amount"], "net_amount": line["amount"], "tax_amount": 0}
            if line.get("tax_rate"):
                doc["tax_rate_id"] = self._resolve("tax_rates", line["tax_rate"], f"lines[{i}].tax_rate")
            if line.get("details"):
                doc["details"] = line["details"]
            lines.append(doc)
        contact = self.contact_id(p["contact"]) if p.get("contact") else None

        def build() -> dict:
            doc = {"transaction_type_id": kind, "date": p["date"], "total_amount": p["total_amount"],
                   "bank_account_id": bank, "payment_lines": lines}
            if contact:
                doc["contact_id"] = contact
            return doc
        record, created = self._find_or_create(
            "other_payments", "other_payment", short_reference(item.idempotency_key),
            {"bank_account_id": bank, "transaction_type_id": kind, "from_date": p["date"], "to_date": p["date"]},
            build)
        return Outcome.sent(item, f"other_payment:{record['id']}", duplicate=not created)

    def _journal(self, item: Item) -> Outcome:
        p = item.payload
        lines = []
        for i, line in enumerate(p["lines"]):
            doc = {"ledger_account_id": self._resolve("ledger_accounts", line["ledger_account"],
                                                      f"lines[{i}].ledger_account"),
                   "debit": line["debit"], "credit": line["credit"]}
            if line.get("details"):
                doc["details"] = line["details"]
            lines.append(doc)
        # Sage cannot search journals by reference: look back far enough to cover the operation's
        # first attempt (it was planned at item.created_at), and at least journal_lookback_days
        days = float(self.config.get("journal_lookback_days", 35))
        start = datetime.now(timezone.utc) - timedelta(days=days)
        if item.created_at:
            start = min(start, datetime.fromtimestamp(item.created_at, timezone.utc) - timedelta(days=1))
        since = start.strftime("%Y-%m-%dT%H:%M:%S+00:00")
        record, created = self._find_or_create(
            "journals", "journal", short_reference(item.idempotency_key),
            {"updated_or_created_since": since},
            lambda: {"date": p["date"], "journal_lines": lines,
                     **({"description": p["description"]} if p.get("description") else {})})
        return Outcome.sent(item, f"journal:{record['id']}", duplicate=not created)

    def _bank_transfer(self, item: Item) -> Outcome:
        p = item.payload
        src = self._resolve("bank_accounts", p["from_bank_account"], "from_bank_account")
        dst = self._resolve("bank_accounts", p["to_bank_account"], "to_bank_account")
        record, created = self._find_or_create(
            "bank_transfers", "bank_transfer", short_reference(item.idempotency_key),
            {"from_date": p["date"], "to_date": p["date"]},
            lambda: {"from_bank_account_id": src, "to_bank_account_id": dst, "date": p["date"],
                     "amount": p["amount"], **({"description": p["description"]} if p.get("description") else {})})
        return Outcome.sent(item, f"bank_transfer:{record['id']}", duplicate=not created)
