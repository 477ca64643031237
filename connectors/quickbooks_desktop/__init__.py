"""QuickBooks Desktop / Enterprise through the QuickBooks Web Connector (qbXML over SOAP).

A pull target: the Web Connector polls ``service.py``; the delivery loop never pushes.
"""
