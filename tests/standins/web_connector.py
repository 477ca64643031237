"""A QuickBooks Web Connector and QuickBooks Desktop company file, as stand-ins.

``FakeQuickBooks`` runs qbXML request documents against an in-memory company
file the way QuickBooks does: every request document is first validated
against Intuit's schema (element order included), requests run in order under
``onError="continueOnError"``, adds answer with a TxnID/ListID, queries answer
statusCode 1 when nothing matches, a list name already taken answers 3100, a
reference to a missing account answers 3140, and a record another user holds
answers 3175. Every response document is schema-valid too.

``WebConnector`` drives whole sessions over real HTTP as QBWC does —
serverVersion, clientVersion, authenticate, sendRequestXML /
receiveResponseXML until 100 percent, getLastError on errors, closeConnection —
either with zeep (a SOAP client built from Intuit's WSDL) or with raw SOAP 1.1
envelopes and the ``SOAPAction`` header.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
from lxml import etree

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


@dataclass
class Txn:
    kind: str
    txn_id: str
    ref_number: str | None
    txn_date: str | None
    memo: str | None
    accounts: list[str]


@dataclass
class FakeQuickBooks:
    """An open company file that answers qbXML."""

    accounts: set[str] = field(default_factory=lambda: {"Stripe Clearing", "Operating Bank", "Sales",
                                                       "Accounts Receivable", "Undeposited Funds"})
    customers: dict[str, str] = field(default_factory=dict)       # name -> ListID
    other_names: set[str] = field(default_factory=set)            # vendors, employees, other names
    txns: list[Txn] = field(default_factory=list)
    busy_requests: int = 0            # the next N add requests answer 3175 (record in use)
    documents: list[str] = field(default_factory=list)            # every request document received
    versions: list[str] = field(default_factory=list)             # every <?qbxml version?> header
    _ids: Any = field(default_factory=lambda: itertools.count(1))

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
        if tag == "CustomerAddRq":
            return self._customer_add(rq)
        if tag == "CustomerQueryRq":
            name = rq.findtext("FullName")
            if name in self.customers:
                return self._rs(rq, 0, "Status OK",
                                f"<CustomerRet><ListID>{self.customers[name]}</ListID><Name>{escape(name)}</Name>"
                                "</CustomerRet>")
            return self._rs(rq, 1, "A query request did not find a matching object in QuickBooks")
        if tag.endswith("AddRq"):
            return self._txn_add(rq)
        if tag.endswith("QueryRq"):
            return self._txn_query(rq)
        return self._rs(rq, 1030, "This request is not supported by this implementation.")

    def _customer_add(self, rq) -> str:
        name = rq.findtext("CustomerAdd/Name")
        if name in self.customers or name in self.other_names:
            return self._rs(rq, 3100, f'The name "{name}" of the list element is already in use.')
        list_id = f"{80000000 + next(self._ids):X}-1700000000"
        self.customers[name] = list_id
        return self._rs(rq, 0, "Status OK", f"<CustomerRet><ListID>{list_id}</ListID><TimeCreated>"
                                            "2024-01-01T00:00:00-05:00</TimeCreated><Name>"
                                            f"{escape(name)}</Name></CustomerRet>")

    def _txn_add(self, rq) -> str:
        add = rq[0]
        kind = add.tag[:-3]
        if self.busy_requests > 0:
            self.busy_requests -= 1
            return self._rs(rq, 3175, f"There was an error when modifying a {kind}. QuickBooks error message: "
                                      "This record is being used by another user.")
        accounts = [el.findtext("FullName") for el in add.iter()
                    if el.tag.endswith("AccountRef") and el.findtext("FullName")]
        for acc in accounts:
            if acc not in self.accounts:
                return self._rs(rq, 3140, f'There is an invalid reference to QuickBooks Account "{acc}" in the '
                                          f"{kind}. QuickBooks error message: Invalid argument.")
        customer = add.findtext("CustomerRef/FullName")
        if customer is not None and customer not in self.customers:
            return self._rs(rq, 3140, f'There is an invalid reference to QuickBooks Customer "{customer}" in '
                                      f"the {kind}.")
        txn = Txn(kind, f"{next(self._ids):X}-1700000000", add.findtext("RefNumber"), add.findtext("TxnDate"),
                  add.findtext("Memo"), accounts)
        self.txns.append(txn)
        memo = f"<Memo>{escape(txn.memo)}</Memo>" if txn.memo else ""
        ref = f"<RefNumber>{escape(txn.ref_number)}</RefNumber>" if txn.ref_number else ""
        return self._rs(rq, 0, "Status OK", f"<{kind}Ret><TxnID>{txn.txn_id}</TxnID><TimeCreated>"
                                            "2024-01-01T00:00:00-05:00</TimeCreated><TxnDate>"
                                            f"{txn.txn_date}</TxnDate>{ref if kind != 'Deposit' else ''}{memo}"
                                            f"</{kind}Ret>")

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
