"""The SOAP 1.1 service the QuickBooks Web Connector talks to (Starlette/ASGI).

``POST`` a SOAP envelope (document/literal, namespace http://developer.intuit.com/,
``SOAPAction`` as in the WSDL); ``GET ?wsdl`` for the service description;
``GET .../support`` for the AppSupport page the .qwc file names. Mounted
into ``ledgerflow serve`` at ``/qbwc`` through ``runner.operate.serve_hooks`` (or on its
own listener, ``serve.qbwc.host``/``port``).

The endpoint is reachable before any login, so: a Content-Length over
``serve.qbwc.max_body_bytes`` is refused (413) before the body is read, a body
is streamed with that cap and ``serve.limits.body_timeout`` (408), a request
that is not one of our SOAP calls gets a SOAP fault with HTTP 400 (server
faults keep 500), and a refused login is answered only after
``login_failure_delay`` (without holding a worker thread).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..asgi import BodyLimits, BodyTimeout, BodyTooLarge, Disconnected, declared_length, read_body
from .webconnector import ServiceSettings, WebConnectorBackend, connections_of
from .wsdl import NS, OPERATIONS, build_wsdl

log = logging.getLogger("ledgerflow.qbwc")

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
MOUNT_PATH = "/qbwc"
SERVER_VERSION = "ledgerflow QuickBooks Web Connector service 1.0"
MAX_BODY = ServiceSettings.max_body_bytes   # default; qbXML responses for a big batch can be large, not unbounded
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=False)


class SoapFault(Exception):
    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


def _envelope(body_xml: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>'
            f'<soap:Envelope xmlns:soap="{SOAP_ENV}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
            f'<soap:Body>{body_xml}</soap:Body></soap:Envelope>')


def fault_response(code: str, message: str, status: int | None = None) -> Response:
    """A SOAP fault; a fault of the caller's making (Client, VersionMismatch) is a 4xx, ours a 500."""
    body = (f"<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{escape(message)}</faultstring>"
            "</soap:Fault>")
    status = status or (500 if code == "Server" else 400)
    return Response(_envelope(body), status_code=status, media_type="text/xml; charset=utf-8")


def result_xml(op: str, result: Any) -> str:
    if isinstance(result, list):
        inner = "".join(f"<string>{escape(str(s))}</string>" for s in result)
    else:
        inner = escape(str(result))
    return f'<{op}Response xmlns="{NS}"><{op}Result>{inner}</{op}Result></{op}Response>'


def parse_call(body: bytes, soap_action: str | None) -> tuple[str, dict[str, str | None]]:
    """(operation, parameters) from a SOAP request envelope; SoapFault when it is not one of ours."""
    try:
        root = etree.fromstring(body, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("Client", f"the request is not well-formed XML: {exc}") from None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault("VersionMismatch" if root.tag.endswith("Envelope") else "Client",
                        f"expected a SOAP 1.1 Envelope ({SOAP_ENV}), got {root.tag}")
    soap_body = root.find(f"{{{SOAP_ENV}}}Body")
    call = next((c for c in (soap_body if soap_body is not None else []) if isinstance(c.tag, str)), None)
    if call is None:
        raise SoapFault("Client", "the SOAP Body is empty (expected one Web Connector operation)")
    qname = etree.QName(call)
    if qname.namespace != NS or qname.localname not in OPERATIONS:
        raise SoapFault("Client", f"unknown operation {{{qname.namespace}}}{qname.localname} "
                                  f"(expected one of {', '.join(OPERATIONS)} in {NS})")
    op = qname.localname
    if soap_action is not None and soap_action.strip().strip('"') not in ("", NS + op):
        raise SoapFault("Client", f"SOAPAction {soap_action!r} does not match the operation {op} "
                                  f"(expected \"{NS}{op}\")")
    params: dict[str, str | None] = {name: None for name, _, _ in OPERATIONS[op][0]}
    for child in call:
        if isinstance(child.tag, str) and etree.QName(child).localname in params:
            params[etree.QName(child).localname] = child.text or ""
    return op, params


def _int(value: str | None, name: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise SoapFault("Client", f"{name}: expected an integer, got {value!r}") from None


def dispatch(backend: WebConnectorBackend, op: str, p: dict[str, str | None], client: str | None = None) -> Any:
    if op == "serverVersion":
        return SERVER_VERSION
    if op == "clientVersion":
        return ""                      # any Web Connector version is fine
    if op == "authenticate":
        return backend.authenticate(p["strUserName"], p["strPassword"], client)
    if op == "sendRequestXML":
        return backend.send_request(p["ticket"], p["strHCPResponse"], p["strCompanyFileName"], p["qbXMLCountry"],
                                    _int(p["qbXMLMajorVers"], "qbXMLMajorVers"),
                                    _int(p["qbXMLMinorVers"], "qbXMLMinorVers"))
    if op == "receiveResponseXML":
        return backend.receive_response(p["ticket"], p["response"], p["hresult"], p["message"])
    if op == "connectionError":
        return backend.connection_error(p["ticket"], p["hresult"], p["message"])
    if op == "getLastError":
        return backend.get_last_error(p["ticket"])
    return backend.close(p["ticket"])


def build_service(backend: WebConnectorBackend, limits: Any = None) -> Starlette:
    """``limits``: its ``body_timeout`` applies (``BodyLimits``, or the server's ``Limits``)."""
    limits = limits or BodyLimits()
    max_body = backend.settings.max_body_bytes

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            if "wsdl" in {k.lower() for k in request.query_params.keys()}:
                address = str(request.url.replace(query=""))
                return Response(build_wsdl(address), media_type="text/xml; charset=utf-8")
            return PlainTextResponse("QuickBooks Web Connector endpoint (SOAP 1.1). WSDL: ?wsdl\n")
        declared = declared_length(request.scope["headers"])
        if declared is not None and declared > max_body:
            return fault_response("Client", f"request larger than {max_body} bytes", 413)
        try:
            body = await read_body(request.receive, max_body, limits.body_timeout)
        except BodyTooLarge:
            return fault_response("Client", f"request larger than {max_body} bytes", 413)
        except BodyTimeout:
            return fault_response("Client", f"request body not received within {limits.body_timeout:g}s", 408)
        except Disconnected:
            return fault_response("Client", "client disconnected before the body was complete")
        client = request.client.host if request.client else None
        try:
            op, params = parse_call(body, request.headers.get("soapaction"))
            result = await run_in_threadpool(dispatch, backend, op, params, client)
            if op == "authenticate" and result == ["", "nvu"] and backend.settings.login_failure_delay > 0:
                await asyncio.sleep(backend.settings.login_failure_delay)    # throttles guessing, holds no thread
        except SoapFault as exc:
            return fault_response(exc.code, str(exc))
        except Exception:  # noqa: BLE001 - the Web Connector gets a fault, the log gets the trace
            log.exception("Web Connector call failed")
            return fault_response("Server", "internal error in the ledgerflow Web Connector service; see its log")
        return Response(_envelope(result_xml(op, result)), media_type="text/xml; charset=utf-8")

    async def support(request: Request) -> Response:
        return PlainTextResponse("ledgerflow: QuickBooks Desktop through the Web Connector.\n"
                                 "See the README section 'QuickBooks Desktop / Enterprise (Web Connector)'.\n")

    return Starlette(routes=[Route("/", endpoint, methods=["GET", "POST"]),
                             Route("/support", support, methods=["GET"])])


def backend_for(runtime) -> WebConnectorBackend:
    """Over the runtime's queue (``Runtime.qbwc``), for the project's quickbooks_desktop connections."""
    return WebConnectorBackend(runtime.qbwc, connections_of(runtime.connections), runtime.secrets,
                               settings=ServiceSettings.from_config(runtime.serve.get("qbwc")))


def mount(runtime) -> tuple[str, Starlette]:
    """``ConnectorSpec.mounts`` entry (``ledgerflow serve``): the Web Connector service at /qbwc, given
    the connector runtime (connectors/CONTRACT.md)."""
    return MOUNT_PATH, build_service(backend_for(runtime), BodyLimits.from_config(runtime.serve.get("limits")))
