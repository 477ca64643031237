"""The QuickBooks Online connector: creates documents, batched, exactly once.

Per delivery call (one company):

1. Check each item (known action, multicurrency) and mark it: the requestid
   derived from the idempotency key goes into ``PrivateNote`` as
   ``[ledgerflow <requestid>]``, so a document found later can be proven ours.
2. Resolve ``{name: ...}`` references to Ids (cached in the store's kv table);
   ``CustomerRef`` by name/email is found or created (with ``currency``: by
   name and currency, created in that currency).
3. An item retried after a lost response (``attempts > 0``) is first looked
   for: by DocNumber, or for a Transfer (no DocNumber) by date and marker.
4. Create: one item alone with its own ``requestid`` (a new one per counted
   attempt, as Intuit replays a requestid's original answer, faults too); more go through
   ``/batch`` in chunks of 30 (requestid: a hash of the chunk's requestids),
   chunks in parallel within Intuit's 10 concurrent requests. Each
   BatchItemResponse maps back to its delivery by ``bId``.
5. Duplicate DocNumber (6140) counts as done once the existing document is
   shown to carry our marker; otherwise it is a permanent error.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from ..base import Connector, ErrorKind, Item, Outcome, TargetError
from ..http import timeout as http_timeout
from ..oauth import OAuthConfig, OAuthSession
from .actions import ACTIONS, ENTITIES, PRIVATE_NOTE_MAX, check_payload
from .client import (
    AUTHORIZE_URL,
    BASE_URLS,
    DUPLICATE_DOCNUMBER,
    DUPLICATE_NAME,
    MINOR_VERSION,
    SCOPE,
    TOKEN_URL,
    Limits,
    QboClient,
    QboFault,
    fault_error,
    fault_of,
    quote,
    request_id,
)

REF_ENTITIES = {"AccountRef": "Account", "DepositToAccountRef": "Account", "FromAccountRef": "Account",
                "ToAccountRef": "Account", "ItemRef": "Item", "ClassRef": "Class", "DepartmentRef": "Department",
                "PaymentMethodRef": "PaymentMethod", "TaxCodeRef": "TaxCode"}
INVALID_REFERENCE = "2500"


def oauth_config(name: str, cfg: Mapping[str, Any], secrets: Any) -> OAuthConfig:
    """The connection's OAuth settings with Intuit's endpoints as defaults."""
    return OAuthConfig.from_connection(name, cfg, secrets, defaults={
        "token_url": TOKEN_URL, "authorize_url": AUTHORIZE_URL, "scopes": [SCOPE],
        "reconnect_hint": "reconnect with `ledgerflow connect quickbooks-online`"})


def marker(rid: str) -> str:
    return f"[ledgerflow {rid}]"


def with_marker(payload: dict[str, Any], rid: str) -> dict[str, Any]:
    mark = marker(rid)
    note = str(payload.get("PrivateNote") or "")
    if mark not in note:
        note = (note[:PRIVATE_NOTE_MAX - len(mark) - 1] + " " + mark).strip()
    return {**payload, "PrivateNote": note}


class _Work:
    """One item on its way: entity, resource, requestid, the payload as it will be sent."""

    def __init__(self, item: Item, entity: str, resource: str, payload: dict[str, Any]):
        self.item = item
        self.entity = entity
        self.resource = resource
        self.rid = request_id(item.idempotency_key)          # the marker: the same on every attempt
        # Intuit answers a repeated requestid with the original response, faults included, so a retry
        # (after the look-up for an earlier attempt's document found none) sends a new one.
        self.send_rid = self.rid if item.attempts == 0 else request_id(f"{item.idempotency_key}#{item.attempts}")
        self.payload = payload if entity == "Customer" else with_marker(payload, self.rid)
        self.names: list[tuple[str, str]] = []      # (entity, name) looked up, to evict on a stale Id

    @property
    def what(self) -> str:
        dn = self.payload.get("DocNumber")
        return f"{self.entity} {dn}" if dn else f"the {self.entity}"


class QuickBooksOnlineConnector(Connector):
    type = "quickbooks_online"
    actions = ACTIONS

    def __init__(self, name: str, config: Mapping[str, Any], runtime: Any):
        super().__init__(name, config, runtime)
        self.limits = Limits.from_config(self.config.get("limits"))
        self._client: QboClient | None = None
        self._http: Any = None
        self._names: dict[tuple[str, str], str] = {}

    # ---- setup ---------------------------------------------------------------------

    @property
    def client(self) -> QboClient:
        if self._client is None:
            import httpx

            env = self.config.get("environment", "sandbox")
            base_url = self.config.get("base_url") or BASE_URLS.get(env)
            if not base_url:
                raise TargetError(f"connections.{self.name}.environment: expected sandbox or production, got {env!r}",
                                  ErrorKind.PERMANENT)
            self._http = httpx.Client(timeout=http_timeout(self.config, 60),
                                      limits=httpx.Limits(max_connections=max(self.limits.concurrency, 1)))
            session = OAuthSession(self.name, oauth_config(self.name, self.config, self.runtime.secrets),
                                   self.runtime.tokens, http=self._http)
            realm = self.config.get("realm_id") or session.current()[0].extra.get("realm_id")
            if not realm:
                raise TargetError(f"connection {self.name!r} has no realm id (company); reconnect with "
                                  "`ledgerflow connect quickbooks-online`", ErrorKind.AUTH)
            self._client = QboClient(base_url=base_url, realm_id=str(realm), session=session, http=self._http,
                                     limiter=self.runtime.limiter, limits=self.limits,
                                     minorversion=int(self.config.get("minorversion", MINOR_VERSION)))
        return self._client

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        self._client = self._http = None

    # ---- delivery --------------------------------------------------------------------

    def deliver(self, items: list[Item]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        work: list[_Work] = []
        for item in items:
            try:
                work.append(self._prepare(item))
            except TargetError as exc:
                outcomes[item.delivery_id] = Outcome.failed(item, exc)
        if work:
            client = self.client       # a TargetError here (auth, config) fails the whole call: the runner records it
            todo = []
            for w in work:
                try:
                    self._resolve_refs(client, w)
                    found = self._existing(client, w) if (w.item.attempts > 0 or w.item.target_ref) else None
                except TargetError as exc:
                    outcomes[w.item.delivery_id] = Outcome.failed(w.item, exc)
                    continue
                if found is not None:
                    outcomes[w.item.delivery_id] = Outcome.sent(w.item, f"{w.entity}:{found['Id']}", existing=True)
                elif w.entity == "Customer":
                    outcomes[w.item.delivery_id] = self._customer_action(client, w)
                else:
                    todo.append(w)
            outcomes.update(self._create_all(client, todo))
        return [outcomes[i.delivery_id] for i in items]

    def _prepare(self, item: Item) -> _Work:
        if item.action not in ENTITIES:
            raise TargetError(f"unknown QuickBooks Online action {item.action!r} (expected one of: "
                              f"{', '.join(sorted(ENTITIES))})", ErrorKind.PERMANENT)
        problems = check_payload(item.action, item.payload, self.config, self.runtime.settings)
        if problems:
            raise TargetError(f"connection {self.name}: " + "; ".join(problems), ErrorKind.PERMANENT,
                              field="CurrencyRef")
        entity, resource = ENTITIES[item.action]
        return _Work(item, entity, resource, dict(item.payload))

    def _create_all(self, client: QboClient, todo: list[_Work]) -> dict[int, Outcome]:
        if not todo:
            return {}
        if len(todo) == 1:
            return {todo[0].item.delivery_id: self._create_one(client, todo[0])}
        size = max(1, min(self.limits.batch_size, 30))
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        out: dict[int, Outcome] = {}
        workers = max(1, min(self.limits.concurrency, len(chunks)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qbo-batch") as pool:
            for res in pool.map(lambda ch: self._create_batch(client, ch), chunks):
                out.update(res)
        return out

    def _create_one(self, client: QboClient, w: _Work) -> Outcome:
        try:
            doc = client.create(w.entity, w.resource, w.payload, w.send_rid)
        except QboFault as exc:
            return self._after_fault(client, w, exc)
        except TargetError as exc:
            return Outcome.failed(w.item, exc)
        return Outcome.sent(w.item, f"{w.entity}:{doc['Id']}")

    def _create_batch(self, client: QboClient, chunk: list[_Work]) -> dict[int, Outcome]:
        requests = [{"bId": str(w.item.delivery_id), "operation": "create", w.entity: w.payload} for w in chunk]
        rid = "lfb-" + hashlib.sha256("\n".join(w.send_rid for w in chunk).encode()).hexdigest()[:46]
        try:
            answers = client.batch(requests, rid)
        except TargetError as exc:
            return {w.item.delivery_id: Outcome.failed(w.item, exc) for w in chunk}
        out = {}
        for w in chunk:
            answer = answers.get(str(w.item.delivery_id))
            if answer is None:
                out[w.item.delivery_id] = Outcome.failed(w.item, TargetError(
                    f"QuickBooks Online's batch answer has no entry for {w.what} (bId {w.item.delivery_id})"))
            elif fault_of(answer):
                out[w.item.delivery_id] = self._after_fault(client, w, fault_error(fault_of(answer), w.what))
            elif isinstance(answer.get(w.entity), Mapping) and answer[w.entity].get("Id"):
                out[w.item.delivery_id] = Outcome.sent(w.item, f"{w.entity}:{answer[w.entity]['Id']}")
            else:
                out[w.item.delivery_id] = Outcome.failed(w.item, TargetError(
                    f"QuickBooks Online's batch answer for {w.what} holds no {w.entity}"))
        return out

    def _after_fault(self, client: QboClient, w: _Work, fault: QboFault) -> Outcome:
        if fault.code == DUPLICATE_DOCNUMBER:
            try:
                found = self._existing(client, w, strict=True)
            except TargetError as exc:
                return Outcome.failed(w.item, exc)
            return Outcome.sent(w.item, f"{w.entity}:{found['Id']}", existing=True)
        if fault.code == INVALID_REFERENCE and w.names:
            self._evict(client, w.names)        # a cached Id went stale: look the names up again next time
            return Outcome.failed(w.item, TargetError(str(fault) + " (cached look-ups cleared; will retry)",
                                                      ErrorKind.RETRYABLE, field=fault.field))
        return Outcome.failed(w.item, fault)

    # ---- finding what an earlier attempt created ---------------------------------------------

    def _existing(self, client: QboClient, w: _Work, *, strict: bool = False) -> dict[str, Any] | None:
        """Our document for this item, if an earlier attempt created it. With a DocNumber taken by a
        document that is not ours, a PERMANENT error (``strict``: also when nothing is found)."""
        mark = marker(w.rid)
        dn = w.payload.get("DocNumber")
        if dn:
            rows = client.query(f"select * from {w.entity} where DocNumber = {quote(str(dn))}",
                                what=f"the look-up of {w.what}").get(w.entity) or []
        elif w.payload.get("TxnDate"):   # no DocNumber (a Transfer, a summary journal): date + marker
            rows = client.query(f"select * from {w.entity} where TxnDate = {quote(w.payload['TxnDate'])} "
                                "maxresults 1000", what=f"the look-up of {w.what}").get(w.entity) or []
        else:
            rows = []
        ours = [r for r in rows if mark in str(r.get("PrivateNote") or "")]
        if ours:
            return ours[0]
        if dn and (rows or strict):
            raise TargetError(f"DocNumber {dn} is already used by {w.entity} "
                              f"{', '.join(str(r.get('Id')) for r in rows) or '(not found)'} which ledgerflow did not "
                              "create (no marker in its PrivateNote): change the mapping's DocNumber or the "
                              "QuickBooks document", ErrorKind.PERMANENT, field="DocNumber")
        return None

    # ---- references by name -------------------------------------------------------------

    def _resolve_refs(self, client: QboClient, w: _Work) -> None:
        w.payload = self._walk(client, w, w.payload, None)

    def _walk(self, client: QboClient, w: _Work, value: Any, parent: Mapping[str, Any] | None) -> Any:
        if isinstance(value, list):
            return [self._walk(client, w, v, parent) for v in value]
        if not isinstance(value, Mapping):
            return value
        out = {}
        for k, v in value.items():
            if isinstance(v, Mapping) and "name" in v and "value" not in v and (
                    k in REF_ENTITIES or k in ("CustomerRef", "EntityRef")):
                out[k] = self._ref(client, w, k, v, value)
            else:
                out[k] = self._walk(client, w, v, value)
        return out

    def _ref(self, client: QboClient, w: _Work, key: str, ref: Mapping[str, Any], owner: Mapping[str, Any]) -> dict:
        name = str(ref["name"])
        if key == "CustomerRef":
            currency = str(ref["currency"]).upper() if ref.get("currency") else None
            w.names.append((self._customer_ns(currency), name))
            return {"value": self._find_or_create_customer(client, name, ref.get("email"), currency=currency)}
        if key == "EntityRef":
            etype = ref.get("type") or owner.get("Type") or "Vendor"
            out = {"value": self._lookup(client, w, etype, name, "DisplayName")}
            return {**out, "type": ref["type"]} if ref.get("type") else out
        entity = REF_ENTITIES[key]
        field = "FullyQualifiedName" if ":" in name else "Name"
        return {"value": self._lookup(client, w, entity, name, field)}

    def _lookup(self, client: QboClient, w: _Work, entity: str, name: str, field: str) -> str:
        w.names.append((entity, name))
        cached = self._cache_get(client, entity, name)
        if cached:
            return cached
        rows = client.query(f"select * from {entity} where {field} = {quote(name)}",
                            what=f"the {entity} look-up").get(entity) or []
        if not rows:
            shown = name if entity not in ("Customer", "Vendor", "Employee") else "(name withheld)"
            raise TargetError(f"no {entity} named {shown!r} in the QuickBooks company (realm {client.realm_id}): "
                              f"create it in QuickBooks or fix the mapping", ErrorKind.PERMANENT, field=entity)
        self._cache_put(client, entity, name, str(rows[0]["Id"]))
        return str(rows[0]["Id"])

    @staticmethod
    def _customer_ns(currency: str | None) -> str:
        """The cache's namespace for customers: by name, or by name within one currency."""
        return "Customer" if not currency else f"Customer@{currency}"

    def _home(self) -> str:
        return str(self.config.get("home_currency") or self.runtime.settings.get("home_currency") or "USD").upper()

    def _in_currency(self, rows: list[dict], currency: str | None) -> list[dict]:
        """The rows whose currency is ``currency`` (a customer without CurrencyRef is in the home currency)."""
        if not currency:
            return rows
        home = self._home()
        return [r for r in rows if str(((r.get("CurrencyRef") or {}).get("value")) or home).upper() == currency]

    def _find_or_create_customer(self, client: QboClient, name: str, email: str | None,
                                 extra: Mapping[str, Any] | None = None, *, currency: str | None = None) -> str:
        """The customer's Id: found by DisplayName (else email) and, with ``currency``, in that currency;
        else created (with CurrencyRef when the currency is foreign or the company is multicurrency).
        QuickBooks ties a customer to one currency, and DisplayName is unique across customers, so a
        customer of that name in another currency is a PERMANENT error naming the fix."""
        ns = self._customer_ns(currency)
        cached = self._cache_get(client, ns, name)
        if cached:
            return cached
        named = client.query(f"select * from Customer where DisplayName = {quote(name)}",
                             what="the Customer look-up").get("Customer") or []
        rows = self._in_currency(named, currency)
        if not named and email:
            rows = self._in_currency(client.query(f"select * from Customer where PrimaryEmailAddr = {quote(email)}",
                                                  what="the Customer look-up").get("Customer") or [], currency)
        if named and not rows:
            other = str(((named[0].get("CurrencyRef") or {}).get("value")) or self._home())
            raise TargetError(f"the QuickBooks customer {name!r} (Id {named[0].get('Id')}) is in {other}, not "
                              f"{currency}: a {currency} transaction needs a {currency} customer; name one per "
                              "currency (the shipped mappings use doc.customer_name(...), e.g. "
                              f"\"{name} {currency}\")", ErrorKind.PERMANENT, field="CustomerRef")
        if rows:
            cid = str(rows[0]["Id"])
        else:
            body = {**(extra or {}), "DisplayName": name}
            if email:
                body["PrimaryEmailAddr"] = {"Address": email}
            if currency and (currency != self._home() or self.config.get("multicurrency")):
                body["CurrencyRef"] = {"value": currency}
            seed = f"{client.realm_id}:{name}" + (f":{currency}" if currency else "")
            rid = request_id("customer:" + hashlib.sha256(seed.encode()).hexdigest())
            try:
                cid = str(client.create("Customer", "customer", body, rid)["Id"])
            except QboFault as exc:
                if exc.code != DUPLICATE_NAME:
                    raise
                rows = self._in_currency(client.query(f"select * from Customer where DisplayName = {quote(name)}",
                                                      what="the Customer look-up").get("Customer") or [], currency)
                if not rows:        # the name belongs to a vendor or employee, or to a customer in another currency
                    raise TargetError(f"{exc}: the display name is taken by a vendor or employee"
                                      + (f", or by a customer not in {currency}" if currency else ""),
                                      ErrorKind.PERMANENT, field="DisplayName") from None
                cid = str(rows[0]["Id"])
        self._cache_put(client, ns, name, cid)
        return cid

    def _customer_action(self, client: QboClient, w: _Work) -> Outcome:
        p = w.payload
        email = (p.get("PrimaryEmailAddr") or {}).get("Address")
        extra = {k: v for k, v in p.items() if k not in ("DisplayName", "PrimaryEmailAddr", "PrivateNote")}
        try:
            currency = (p.get("CurrencyRef") or {}).get("value")
            return Outcome.sent(w.item, "Customer:" + self._find_or_create_customer(client, p["DisplayName"], email,
                                                                                    extra, currency=currency))
        except TargetError as exc:
            return Outcome.failed(w.item, exc)

    # ---- the look-up cache (memory, then the runtime's key/value cache) ------------------------

    def _ns(self, client: QboClient, entity: str) -> str:
        return f"qbo:{client.realm_id}:{entity}"

    @staticmethod
    def _k(name: str) -> str:
        return name if len(name) <= 200 else "sha256:" + hashlib.sha256(name.encode()).hexdigest()

    def _cache_get(self, client: QboClient, entity: str, name: str) -> str | None:
        key = (self._ns(client, entity), self._k(name))
        if key in self._names:
            return self._names[key]
        value = self.runtime.cache.get(*key) if self.runtime.cache is not None else None
        if value:
            self._names[key] = value
        return value

    def _cache_put(self, client: QboClient, entity: str, name: str, value: str) -> None:
        key = (self._ns(client, entity), self._k(name))
        self._names[key] = value
        if self.runtime.cache is not None:
            self.runtime.cache.put(*key, value)

    def _evict(self, client: QboClient, names: list[tuple[str, str]]) -> None:
        for entity, name in names:
            key = (self._ns(client, entity), self._k(name))
            self._names.pop(key, None)
            if self.runtime.cache is not None:
                self.runtime.cache.delete(*key)
