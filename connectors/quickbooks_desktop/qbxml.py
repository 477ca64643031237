"""qbXML request documents and response parsing (lxml).

Payloads use qbXML element names; the shapes below list, for each element we
produce, its children in the order Intuit's schema (qbxmlops120.xsd) requires,
so key order in a mapping never matters. Several requests travel in one
``QBXMLMsgsRq onError="continueOnError"``, each with a ``requestID`` that maps
its response back to its delivery.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Mapping

from lxml import etree

from connectors.base import ErrorKind, TargetError

from .actions import OBJECTS
from .currencies import CURRENCY_NAMES, currency_code, currency_name  # noqa: F401 - qbxml's API

DEFAULT_VERSION = "13.0"

# ---- shapes: child order as the XSD sequences require ------------------------

REF = {"ListID": None, "FullName": None}
ADDRESS = {**{f"Addr{i}": None for i in range(1, 6)}, "City": None, "State": None, "PostalCode": None,
           "Country": None, "Note": None}
SALES_LINE = {"ItemRef": REF, "Desc": None, "Quantity": None, "ClassRef": REF, "Amount": None,
              "ServiceDate": None, "SalesTaxCodeRef": REF, "OverrideItemAccountRef": REF}

SHAPES: dict[str, dict[str, Any]] = {
    "SalesReceiptAdd": {
        "CustomerRef": REF, "ClassRef": REF, "TxnDate": None, "RefNumber": None, "BillAddress": ADDRESS,
        "PaymentMethodRef": REF, "Memo": None, "IsToBePrinted": None, "IsToBeEmailed": None,
        "DepositToAccountRef": REF, "ExchangeRate": None, "SalesReceiptLineAdd": SALES_LINE,
    },
    "CreditMemoAdd": {
        "CustomerRef": REF, "ClassRef": REF, "ARAccountRef": REF, "TxnDate": None, "RefNumber": None,
        "BillAddress": ADDRESS, "Memo": None, "IsToBePrinted": None, "IsToBeEmailed": None,
        "ExchangeRate": None, "CreditMemoLineAdd": SALES_LINE,
    },
    "DepositAdd": {
        "TxnDate": None, "DepositToAccountRef": REF, "Memo": None, "CurrencyRef": REF, "ExchangeRate": None,
        "DepositLineAdd": {"EntityRef": REF, "AccountRef": REF, "Memo": None, "CheckNumber": None,
                           "PaymentMethodRef": REF, "ClassRef": REF, "Amount": None},
    },
    "JournalEntryAdd": {
        "TxnDate": None, "RefNumber": None, "Memo": None, "IsAdjustment": None, "CurrencyRef": REF,
        "ExchangeRate": None,
        "JournalDebitLine": {"AccountRef": REF, "Amount": None, "Memo": None, "EntityRef": REF, "ClassRef": REF},
        "JournalCreditLine": {"AccountRef": REF, "Amount": None, "Memo": None, "EntityRef": REF, "ClassRef": REF},
    },
    "ReceivePaymentAdd": {
        "CustomerRef": REF, "ARAccountRef": REF, "TxnDate": None, "RefNumber": None, "TotalAmount": None,
        "ExchangeRate": None, "PaymentMethodRef": REF, "Memo": None, "DepositToAccountRef": REF,
        "IsAutoApply": None, "AppliedToTxnAdd": {"TxnID": None, "PaymentAmount": None},
    },
    "CustomerAdd": {
        "Name": None, "IsActive": None, "CompanyName": None, "FirstName": None, "LastName": None,
        "BillAddress": ADDRESS, "Phone": None, "Email": None, "AccountNumber": None, "Notes": None,
        "CurrencyRef": REF,
    },
}
AMOUNT_FIELDS = {"Amount", "TotalAmount", "PaymentAmount"}

def _currency_names(payload: Any) -> Any:
    if isinstance(payload, Mapping):
        out = {}
        for k, v in payload.items():
            if k == "CurrencyRef" and isinstance(v, Mapping) and isinstance(v.get("FullName"), str):
                v = {**v, "FullName": currency_name(v["FullName"])}
            else:
                v = _currency_names(v)
            out[k] = v
        return out
    if isinstance(payload, list):
        return [_currency_names(v) for v in payload]
    return payload

# ---- the memo tag: the delivery key, where RefNumber (11 characters) cannot hold it ---------

TAG_RE = re.compile(r"\[lf:([a-z2-7]{16})\]")


def delivery_tag(idempotency_key: str) -> str:
    """A short, stable tag for a delivery key, written into the transaction's memo."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    return "[lf:" + base64.b32encode(digest).decode().lower()[:16] + "]"


def tagged_memo(memo: str | None, idempotency_key: str) -> str:
    tag = delivery_tag(idempotency_key)
    memo = (memo or "").strip()
    return f"{memo} {tag}" if memo else tag


# ---- building -----------------------------------------------------------------

def _text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in AMOUNT_FIELDS:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
        q = d.quantize(Decimal("0.01"))
        if q != d:
            raise TargetError(f"{name}: QuickBooks amounts have at most 2 decimals, got {value}",
                              ErrorKind.PERMANENT, field=name)
        return format(q, "f")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        raise TargetError(f"{name}: a float ({value!r}) reached a qbXML payload", ErrorKind.PERMANENT, field=name)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _fill(parent: etree._Element, payload: Mapping[str, Any], shape: Mapping[str, Any], where: str) -> None:
    unknown = set(payload) - set(shape)
    if unknown:
        raise TargetError(f"{where}: qbXML has no element {sorted(unknown)[0]!r} here "
                          f"(expected one of {', '.join(shape)})", ErrorKind.PERMANENT, field=sorted(unknown)[0])
    for name, sub in shape.items():
        if name not in payload or payload[name] is None:
            continue
        values = payload[name] if isinstance(payload[name], list) else [payload[name]]
        for v in values:
            el = etree.SubElement(parent, name)
            if sub is None:
                el.text = _text(name, v)
            elif isinstance(v, Mapping):
                _fill(el, v, sub, f"{where}.{name}")
            else:
                raise TargetError(f"{where}.{name}: expected an object, got {v!r}", ErrorKind.PERMANENT, field=name)


def add_request(action: str, payload: Mapping[str, Any], request_id: str, idempotency_key: str) -> etree._Element:
    """``<XxxAddRq requestID=...><XxxAdd>...</XxxAdd></XxxAddRq>``; transactions get the memo tag."""
    obj = OBJECTS.get(action)
    if obj is None:
        raise TargetError(f"quickbooks_desktop has no action {action!r} (known: {', '.join(OBJECTS)})",
                          ErrorKind.PERMANENT)
    body = _currency_names(dict(payload))
    if action == "receive_payment" and "AppliedToTxnAdd" not in body and "IsAutoApply" not in body:
        body["IsAutoApply"] = True
    if action != "customer":
        body["Memo"] = tagged_memo(body.get("Memo"), idempotency_key)
    rq = etree.Element(f"{obj}AddRq", requestID=request_id)
    add = etree.SubElement(rq, f"{obj}Add")
    _fill(add, body, SHAPES[f"{obj}Add"], f"{obj}Add")
    return rq


def query_request(action: str, payload: Mapping[str, Any], request_id: str) -> etree._Element:
    """The ...QueryRq that finds a transaction an earlier, broken-off session may have added.

    By RefNumber when the payload has one, else by its date (deposits have no
    RefNumber); the response is matched on the memo tag.
    """
    obj = OBJECTS[action]
    rq = etree.Element(f"{obj}QueryRq", requestID=request_id)
    if action == "customer":
        etree.SubElement(rq, "FullName").text = str(payload["Name"])
        etree.SubElement(rq, "IncludeRetElement").text = "ListID"
        etree.SubElement(rq, "IncludeRetElement").text = "Name"
        return rq
    if payload.get("RefNumber") and action != "deposit":
        etree.SubElement(rq, "RefNumber").text = str(payload["RefNumber"])
    else:
        rng = etree.SubElement(rq, "TxnDateRangeFilter")
        etree.SubElement(rng, "FromTxnDate").text = _text("TxnDate", payload["TxnDate"])
        etree.SubElement(rng, "ToTxnDate").text = _text("TxnDate", payload["TxnDate"])
    for name in ("TxnID", "Memo"):
        etree.SubElement(rq, "IncludeRetElement").text = name
    return rq


def message(requests: list[etree._Element], version: str = DEFAULT_VERSION) -> str:
    """A whole qbXML request document with its version header."""
    root = etree.Element("QBXML")
    msgs = etree.SubElement(root, "QBXMLMsgsRq", onError="continueOnError")
    msgs.extend(requests)
    body = etree.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="utf-8"?>\n<?qbxml version="{version}"?>\n{body}'


# ---- versions -------------------------------------------------------------------

def _vkey(v: str) -> tuple[int, int]:
    major, _, minor = v.partition(".")
    return int(major), int(minor or 0)


def supported_versions(hcp_response: str | None) -> list[str]:
    """SupportedQBXMLVersion values from the HostQuery response QBWC sends on the first sendRequestXML."""
    if not hcp_response or not hcp_response.strip():
        return []
    try:
        root = etree.fromstring(hcp_response.strip().encode(), parser=_PARSER)
    except etree.XMLSyntaxError:
        return []
    out = []
    for el in root.iter("SupportedQBXMLVersion"):
        t = (el.text or "").strip()
        if re.fullmatch(r"\d+(\.\d+)?", t):
            out.append(t if "." in t else t + ".0")
    return out


def choose_version(preferred: str, hcp_response: str | None, major: int | None, minor: int | None) -> str:
    """The version header: the preferred one when QuickBooks supports it, else the highest supported
    version below it; with nothing reported (or nothing below), the preferred one as the fallback."""
    supported = supported_versions(hcp_response)
    if not supported and major:
        supported = [f"{major}.{minor or 0}"]          # the highest version QuickBooks reports
        return preferred if _vkey(supported[0]) >= _vkey(preferred) else supported[0]
    if not supported or preferred in supported:
        return preferred
    below = [v for v in supported if _vkey(v) <= _vkey(preferred)]
    return max(below, key=_vkey) if below else preferred


# ---- responses --------------------------------------------------------------------

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@dataclass
class Response:
    """One ``...Rs`` of a response message."""

    request_id: str
    name: str
    code: int
    severity: str
    message: str
    rets: list[dict[str, str]] = field(default_factory=list)   # TxnID/ListID/Memo/... of each ...Ret

    @property
    def ok(self) -> bool:
        return self.code == 0 or (500 <= self.code < 1000 and bool(self.rets))

    def ref(self) -> str | None:
        for r in self.rets:
            if r.get("TxnID") or r.get("ListID"):
                return r.get("TxnID") or r.get("ListID")
        return None


def parse_response(text: str) -> list[Response]:
    """Every ``...Rs`` in a qbXML response document (raises ValueError on a broken document)."""
    try:
        root = etree.fromstring(text.strip().encode(), parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"the qbXML response is not well-formed XML: {exc}") from None
    msgs = root.find("QBXMLMsgsRs")
    if root.tag != "QBXML" or msgs is None:
        raise ValueError("the qbXML response has no QBXML/QBXMLMsgsRs element")
    out = []
    for rs in msgs:
        if not isinstance(rs.tag, str) or not rs.tag.endswith("Rs"):
            continue
        try:
            code = int(rs.get("statusCode", ""))
        except ValueError:
            raise ValueError(f"{rs.tag} requestID={rs.get('requestID')!r} has no numeric statusCode") from None
        rets = []
        for ret in rs:
            if isinstance(ret.tag, str) and ret.tag.endswith("Ret"):
                rets.append({c.tag: (c.text or "") for c in ret if isinstance(c.tag, str) and len(c) == 0})
        out.append(Response(rs.get("requestID", ""), rs.tag, code, rs.get("statusSeverity", ""),
                            rs.get("statusMessage", ""), rets))
    return out


# Status codes that mean "QuickBooks is busy or the record is in use": try again at the next poll.
BUSY_CODES = frozenset({1000, 1010, 3175, 3176, 3180, 3231, 9001})
NAME_IN_USE = 3100
NO_MATCH = 1


def classify(resp: Response) -> TargetError:
    """A failed ``...Rs`` as a TargetError carrying Intuit's own message."""
    text = f"QuickBooks {resp.code} ({resp.severity or 'Error'}): {resp.message or 'no message'} [{resp.name}]"
    if resp.code in BUSY_CODES:
        return TargetError(text, ErrorKind.RETRYABLE)
    return TargetError(text, ErrorKind.PERMANENT)
