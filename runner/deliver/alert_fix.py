"""What an alert tells the reader to do: a fix for the kind of error, and the exact command after it.

A dead letter's fix depends on why it died: a missing secret (name the
variable, or ``ledgerflow connect <system> --connection <name>`` for an OAuth
connection), refused credentials (re-connect), a rejection of the data (the
field the target named, and the mapping that fills it), a planning failure
(the flow or mapping at its ``file:line:col``), or transient failures that
outlasted every attempt. Throttled and transient failures that are still being
retried need nothing: the message says ledgerflow retries on its own.

The commands are exact: one dead letter is replayed by id; a group of
identical failures by ``ledgerflow dlq replay --all --flow F --alert KEY``,
which selects the dead letters of that alert (same flow, target and error,
once ids and numbers are masked: ``alerts.signature``) and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path

WHERE = re.compile(r"(?P<file>[^\s:'\"`()]+\.(?:ya?ml|json|j2|jinja2?)):(?P<line>\d+):(?P<col>\d+)")
FIELD = re.compile(r"""(?:\bfield[:\s]+|"field"\s*:\s*)["'`]?(?P<field>[A-Za-z_][\w.\[\]-]*)""")
MISSING_ENV = re.compile(r"environment variable (?P<name>\w+) is not set")
MISSING_BLOCK = re.compile(r"cannot load Prefect Secret block (?P<name>'[^']+'|\S+)")
NO_TOKENS = "has no OAuth tokens"
GAVE_UP = "gave up after"


def where_of(error: str | None, project_dir: Path | str | None = None) -> str | None:
    """The ``file:line:col`` an error names (relative to the project when it is inside it)."""
    m = WHERE.search(error or "")
    if not m:
        return None
    path = m.group("file")
    if project_dir:
        try:
            path = str(Path(path).relative_to(Path(project_dir)))
        except ValueError:
            pass
    return f"{path}:{m.group('line')}:{m.group('col')}"


def field_of(error: str | None) -> str | None:
    m = FIELD.search(error or "")
    return m.group("field") if m else None


def oauth_system(connector_type: str | None) -> str | None:
    """The ``ledgerflow connect`` system for a connector type (quickbooks-online, sage), if any."""
    from connectors import registry  # the connectors declare their systems
    systems = {system: ctype for system, (ctype, _) in registry.oauth_providers().items()}
    return next((system for system, ctype in sorted(systems.items()) if ctype == connector_type), None)


def connect_command(connection: str | None, connector_type: str | None) -> str | None:
    system = oauth_system(connector_type)
    if not system or not connection:
        return None
    return f"ledgerflow connect {system} --connection {connection}"


def code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _secret_fix(alert, error: str) -> str | None:
    connect = connect_command(alert.connection, alert.connector_type)
    if NO_TOKENS in error:
        return ("Connection " + (alert.connection or "?") + " was never authorized (no tokens): "
                + (code(connect) if connect else "connect it") + ", then replay.")
    env, block = MISSING_ENV.search(error), MISSING_BLOCK.search(error)
    if not env and not block:
        return None
    what = (f"Set the environment variable {code(env.group('name'))} for `ledgerflow serve` and the workers"
            if env else f"Create the Prefect Secret block {block.group('name')} (or fix its name in ledgerflow.yaml)")
    return what + (f"; if the connection was never authorized, {code(connect)}" if connect else "") + "; then replay."


def _auth_fix(alert) -> str:
    connect = connect_command(alert.connection, alert.connector_type)
    if connect:
        return f"The target refused the credentials of {alert.connection}: re-connect with {code(connect)}, then replay."
    return (f"The target refused the credentials of {alert.connection or 'the connection'}: check them in "
            "ledgerflow.yaml (and the secret they name), then replay.")


def _data_fix(alert, error: str) -> str:
    field = getattr(alert, "field", None) or field_of(error)
    check = code(f"ledgerflow preview {alert.flow_file or alert.flow} --event EVENT.json")
    what = f"The target rejected field {code(field)}" if field else "The target rejected the data"
    return f"{what}: fix the mapping that fills it (check it with {check}), then replay."


def _plan_fix(alert) -> str:
    where = f" at {code(alert.where)}" if alert.where else ""
    event = alert.event_id or "EVENT"
    return (f"The flow could not plan the event: fix the flow or mapping{where}; check it with "
            f"{code(f'ledgerflow inbox show {event} --payload > {event}.json')} and "
            f"{code(f'ledgerflow preview {alert.flow_file or alert.flow} --event {event}.json')}; then retry.")


def fix_for(alert) -> str:
    """One sentence: what to do about this alert's error (without the command that follows it)."""
    error = alert.error or ""
    kind = (alert.error_kind or "").lower()
    if alert.kind == "run-failed":
        return "See the run's logs, then look at the dead-letter queue."
    secret = _secret_fix(alert, error)
    if secret:
        return secret
    if alert.kind == "plan-failed" and kind in ("retryable", "lost", "throttled"):
        return ("Planning kept failing on something outside the flow (Stripe or a look-up unreachable, say) "
                "through every attempt: check that it answers (and the Stripe key), then retry.")
    if alert.kind == "plan-failed":
        return _plan_fix(alert)
    if kind == "auth":
        return _auth_fix(alert)
    if kind == "throttled":
        return "The target is throttling: ledgerflow retries on its own after the wait it asks for; nothing to do."
    if kind in ("retryable", "lost"):
        if alert.kind == "dead" or GAVE_UP in error:
            return "Transient failures (timeouts, 5xx) outlasted every attempt: check that the target is up, then replay."
        return "Transient: ledgerflow retries with the flow's backoff; nothing to do unless it dead-letters."
    return _data_fix(alert, error)


def replay_command(alert, count: int = 1, key: str | None = None) -> str:
    """The command that retries what the alert is about: by id for one, by alert key for a group."""
    if alert.kind == "run-failed":
        return "ledgerflow dlq list" + (f" --flow {alert.flow}" if alert.flow else "")
    if count == 1 and alert.delivery_id is not None and key is None:
        return f"ledgerflow dlq replay {alert.delivery_id}"
    return f"ledgerflow dlq replay --all --flow {alert.flow} --alert {(key or alert.group_key)[:12]}"
