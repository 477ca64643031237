"""Actions of the generic ``http`` connector (no HTTP library imported here)."""

from __future__ import annotations

from connectors.base import Action
from connectors.contract import SECRET_REF, Capabilities, ConnectorSpec, config_schema, with_examples

POST = {
    "type": "object",
    "minProperties": 1,
    "description": "Any JSON object; it is sent as the request body.",
}

ACTIONS = {
    "post": Action("post", POST, "POST the payload as JSON to the connection's url, with an Idempotency-Key header."),
}

SPEC = ConnectorSpec(
    type="http",
    connector="connectors.http_post.connector:HttpPostConnector",
    description="Any HTTP endpoint: each operation's payload POSTed as JSON with an Idempotency-Key header.",
    actions=with_examples(ACTIONS, {"post": [{"id": "ch_1", "amount": "25.00", "currency": "usd"}]}),
    config=config_schema("http", {
        "url": {"type": "string", "pattern": "^https?://", "description": "The URL to POST to."},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds per request (default 10)."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Plain headers (no secrets: use bearer_token)."},
        "bearer_token": {**SECRET_REF, "description": "Sent as Authorization: Bearer (a secret reference)."},
        "idempotency_header": {"type": "string", "minLength": 1, "description": "Default Idempotency-Key."},
        "concurrency": {"type": "integer", "minimum": 1, "description": "Parallel requests in a batch (default 4)."},
    }, ("url",)),
    capabilities=Capabilities(batch_size=1, idempotency="Idempotency-Key header: the target de-duplicates"),
)
