"""The .qwc file a user loads into the QuickBooks Web Connector.

OwnerID and FileID are GUIDs created once per install and kept in the store
(``kv_cache``), so regenerating the file never makes QuickBooks see a new
application. FileID is per connection (one company file each).
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

from lxml import etree

from ..base import LedgerflowError
from .service import MOUNT_PATH

NAMESPACE = "qbwc"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def stable_guid(cache, key: str) -> str:
    """``{XXXXXXXX-...}``: made on first use, the same ever after (even with two processes racing).
    ``cache`` is ``Runtime.cache``."""
    return cache.put_new(NAMESPACE, key, "{" + str(uuid.uuid4()).upper() + "}")


def app_url(url: str) -> str:
    """Check the service URL the Web Connector will call (https, or http on this machine only)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise LedgerflowError(f"--url {url!r}: expected an absolute URL such as https://HOST/qbwc")
    if parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
        raise LedgerflowError(f"--url {url!r}: the Web Connector only calls https:// URLs "
                              "(plain http is allowed for localhost only)")
    path = parts.path or "/"
    if path.rstrip("/") == MOUNT_PATH:      # the service is mounted at /qbwc/: avoid a redirect on every call
        path = MOUNT_PATH + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def build_qwc(*, url: str, username: str, owner_id: str, file_id: str, minutes: int = 5,
              app_name: str = "ledgerflow", description: str | None = None) -> str:
    if not 1 <= minutes <= 1440:
        raise LedgerflowError(f"--minutes {minutes}: expected 1 to 1440")
    if not username.strip():
        raise LedgerflowError("--user: expected the Web Connector user name of a quickbooks_desktop connection")
    target = app_url(url)
    support = target.rstrip("/") + "/support"
    root = etree.Element("QBWCXML")
    for tag, text in (("AppName", app_name), ("AppID", ""), ("AppURL", target),
                      ("AppDescription", description or "ledgerflow: Stripe to QuickBooks Desktop"),
                      ("AppSupport", support), ("UserName", username), ("OwnerID", owner_id),
                      ("FileID", file_id), ("QBType", "QBFS")):
        etree.SubElement(root, tag).text = text
    sched = etree.SubElement(root, "Scheduler")
    etree.SubElement(sched, "RunEveryNMinutes").text = str(minutes)
    etree.SubElement(root, "IsReadOnly").text = "false"
    return etree.tostring(root, xml_declaration=True, encoding="utf-8", pretty_print=True).decode()
