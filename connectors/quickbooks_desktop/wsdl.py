"""The Web Connector service description (QBWebConnectorSvc), generated from the operation table.

SOAP 1.1, document/literal, namespace http://developer.intuit.com/: the
operations, element names and soapActions the Web Connector expects.
"""

from __future__ import annotations

from lxml import etree

NS = "http://developer.intuit.com/"
XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"

# operation -> (input parameters, result element, result type); a parameter is (name, type, required)
OPERATIONS: dict[str, tuple[list[tuple[str, str, bool]], str]] = {
    "serverVersion": ([("strVersion", "s:string", False)], "s:string"),
    "clientVersion": ([("strVersion", "s:string", False)], "s:string"),
    "authenticate": ([("strUserName", "s:string", False), ("strPassword", "s:string", False)], "tns:ArrayOfString"),
    "sendRequestXML": ([("ticket", "s:string", False), ("strHCPResponse", "s:string", False),
                        ("strCompanyFileName", "s:string", False), ("qbXMLCountry", "s:string", False),
                        ("qbXMLMajorVers", "s:int", True), ("qbXMLMinorVers", "s:int", True)], "s:string"),
    "receiveResponseXML": ([("ticket", "s:string", False), ("response", "s:string", False),
                            ("hresult", "s:string", False), ("message", "s:string", False)], "s:int"),
    "connectionError": ([("ticket", "s:string", False), ("hresult", "s:string", False),
                         ("message", "s:string", False)], "s:string"),
    "getLastError": ([("ticket", "s:string", False)], "s:string"),
    "closeConnection": ([("ticket", "s:string", False)], "s:string"),
}


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _element(schema, name: str, fields: list[tuple[str, str, bool]]) -> None:
    el = etree.SubElement(schema, _q(XS, "element"), name=name)
    seq = etree.SubElement(etree.SubElement(el, _q(XS, "complexType")), _q(XS, "sequence"))
    for fname, ftype, required in fields:
        etree.SubElement(seq, _q(XS, "element"), minOccurs="1" if required else "0", maxOccurs="1",
                         name=fname, type=ftype)


def build_wsdl(address: str) -> bytes:
    """The WSDL with ``address`` as the service location."""
    nsmap = {"wsdl": WSDL, "soap": SOAP, "s": XS, "tns": NS}
    root = etree.Element(_q(WSDL, "definitions"), nsmap=nsmap, targetNamespace=NS)
    types = etree.SubElement(root, _q(WSDL, "types"))
    schema = etree.SubElement(types, _q(XS, "schema"), elementFormDefault="qualified", targetNamespace=NS)
    arr = etree.SubElement(schema, _q(XS, "complexType"), name="ArrayOfString")
    etree.SubElement(etree.SubElement(arr, _q(XS, "sequence")), _q(XS, "element"), minOccurs="0",
                     maxOccurs="unbounded", name="string", nillable="true", type="s:string")
    for op, (params, result_type) in OPERATIONS.items():
        _element(schema, op, params)
        _element(schema, f"{op}Response", [(f"{op}Result", result_type, result_type == "s:int")])
    for op in OPERATIONS:
        for suffix, elname in (("SoapIn", op), ("SoapOut", f"{op}Response")):
            msg = etree.SubElement(root, _q(WSDL, "message"), name=f"{op}{suffix}")
            etree.SubElement(msg, _q(WSDL, "part"), name="parameters", element=f"tns:{elname}")
    port_type = etree.SubElement(root, _q(WSDL, "portType"), name="QBWebConnectorSvcSoap")
    for op in OPERATIONS:
        o = etree.SubElement(port_type, _q(WSDL, "operation"), name=op)
        etree.SubElement(o, _q(WSDL, "input"), message=f"tns:{op}SoapIn")
        etree.SubElement(o, _q(WSDL, "output"), message=f"tns:{op}SoapOut")
    binding = etree.SubElement(root, _q(WSDL, "binding"), name="QBWebConnectorSvcSoap",
                               type="tns:QBWebConnectorSvcSoap")
    etree.SubElement(binding, _q(SOAP, "binding"), transport="http://schemas.xmlsoap.org/soap/http", style="document")
    for op in OPERATIONS:
        o = etree.SubElement(binding, _q(WSDL, "operation"), name=op)
        etree.SubElement(o, _q(SOAP, "operation"), soapAction=NS + op, style="document")
        for io in ("input", "output"):
            etree.SubElement(etree.SubElement(o, _q(WSDL, io)), _q(SOAP, "body"), use="literal")
    service = etree.SubElement(root, _q(WSDL, "service"), name="QBWebConnectorSvc")
    port = etree.SubElement(service, _q(WSDL, "port"), name="QBWebConnectorSvcSoap",
                            binding="tns:QBWebConnectorSvcSoap")
    etree.SubElement(port, _q(SOAP, "address"), location=address)
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True)
