"""Actions of the generic ``http`` connector (no HTTP library imported here)."""

from __future__ import annotations

from connectors.base import Action

POST = {
    "type": "object",
    "minProperties": 1,
    "description": "Any JSON object; it is sent as the request body.",
}

ACTIONS = {
    "post": Action("post", POST, "POST the payload as JSON to the connection's url, with an Idempotency-Key header."),
}
