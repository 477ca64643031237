"""After `ledgerflow connect sage`: choose the business that X-Business will name.

A Sage user may reach several businesses. The connection's ``business_id``
wins when set (it must be one of them); otherwise the first business Sage
lists (the lead business) is recorded with the tokens.
"""

from __future__ import annotations

from typing import Any, Mapping

from connectors.base import LedgerflowError


def choose_business(name: str, cfg: Mapping[str, Any], tokens: Any, runtime: Any) -> str:
    """``OAuthProvider.after``: ``runtime`` is the connector runtime (secrets, the token rows)."""
    from connectors.oauth import OAuthSession

    from .client import DEFAULT_BASE_URL, SageClient
    from .connector import oauth_config

    session = OAuthSession(name, oauth_config(name, cfg, runtime.secrets), runtime.tokens,
                           margin=float(cfg.get("refresh_margin", 60)))
    client = SageClient(session, base_url=cfg.get("base_url", DEFAULT_BASE_URL),
                        timeout=float(cfg.get("timeout", 30)))
    try:
        businesses = list(client.iter_list("businesses", business=False))
    finally:
        client.close()
    if not businesses:
        raise LedgerflowError(f"connection {name}: the Sage user has no business to connect")
    listed = ", ".join(f"{b.get('name') or b.get('displayed_as')} ({b['id']})" for b in businesses)
    configured = cfg.get("business_id")
    if configured:
        chosen = next((b for b in businesses if b["id"] == configured), None)
        if chosen is None:
            raise LedgerflowError(f"connections.{name}.business_id {configured!r} is not a business this Sage "
                                  f"user can reach (they can reach: {listed})")
    else:
        chosen = businesses[0]
    current, _ = session.current()
    current.extra["business_id"] = chosen["id"]
    session.save(current)
    note = f"business {chosen.get('name') or chosen.get('displayed_as')} ({chosen['id']})"
    if len(businesses) > 1 and not configured:
        note += f"; set connections.{name}.business_id to choose another of: {listed}"
    return note
