"""Slack alerts: dead letters and failed flow runs, grouped, without personal data.

Configuration (ledgerflow.yaml)::

    slack:
      webhook_url: {env: SLACK_WEBHOOK_URL}     # an incoming webhook, or
      bot_token: {prefect_secret: slack-bot}    # a bot token and a channel
      channel: "#finance-ops"                   # default channel (a flow's alert.slack wins)
      window: 15m                               # group identical failures this long
      api_url: https://slack.com/api/           # only to point at another Slack API

Identical failures (same kind, flow, target and error, once numbers and ids
are masked) within a window send one message; later ones are counted, and
the count goes out when the window closes (``flush_grouped``, called by the
delivery loop) or with the next message. Error texts are scrubbed of emails,
card numbers, phone numbers and personal fields before they leave.

Every message names the event (type, Stripe object id, amount: never the
customer), a fix for the kind of error and the exact command after it
(``runner.deliver.alert_fix``), and links the Prefect run through ``PREFECT_UI_URL``
when it is set, so the link works away from the server's own machine. A
flow that could not plan an event (a dead plan row, ``runner.deliver.replan``) is
alerted as a planning failure with its ``file:line:col``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

from runner.core.redact import scrub
from runner.core.slack import channel_for as _channel_for
from runner.core.slack import flow_alert_settings as _flow_alert_settings
from runner.core.slack import post_message, prefect_run_url, prefect_ui_url, slack_config  # noqa: F401 - alerts' API
from runner.deliver import alert_fix
from runner.language.spec import parse_duration

log = logging.getLogger("ledgerflow.alerts")

DEFAULT_WINDOW = 900.0
ERROR_LIMIT = 600
# Stripe/QuickBooks-style ids and numbers vary between otherwise identical failures
_VOLATILE = re.compile(r"\b[a-z]{2,5}_[A-Za-z0-9]{6,}\b|\d+(\.\d+)?")


def signature(error: str | None) -> str:
    return _VOLATILE.sub("#", error or "")[:300]


@dataclass
class Alert:
    kind: str                 # dead | plan-failed | run-failed
    flow: str
    target: str | None
    error: str
    event_id: str | None = None
    delivery_id: int | None = None
    run_id: str | None = None
    run_name: str | None = None
    channel: str | None = None
    window: float = DEFAULT_WINDOW
    error_kind: str | None = None        # the target error's kind: permanent, auth, retryable, throttled
    connection: str | None = None
    connector_type: str | None = None
    flow_file: str | None = None
    where: str | None = None             # file:line:col of a planning failure
    field: str | None = None             # the field a target rejected, when known
    facts: Any = None                    # timeline.EventFacts: type, Stripe object id, amount

    @property
    def group_key(self) -> str:
        raw = "\x1f".join([self.kind, self.flow, self.target or "", signature(self.error)])
        return hashlib.sha1(raw.encode("utf-8")).hexdigest()


# ---- configuration and sending: runner/core/slack.py ------------------------------------------

# ---- messages -------------------------------------------------------------------------

_code = alert_fix.code
TITLES = {"dead": "Dead-lettered", "plan-failed": "Planning failed", "run-failed": "Flow run failed"}


def _event_text(alert: Alert) -> str:
    facts = alert.facts
    return facts.line() if facts is not None else "-"


def build_message(alert: Alert, count: int, *, earlier: int = 0) -> tuple[str, list[dict]]:
    """(fallback text, Block Kit blocks) for one alert that stands for ``count`` occurrences."""
    error = (scrub(alert.error) or "")[:ERROR_LIMIT]
    replay = alert_fix.replay_command(alert, count)
    title = f"{TITLES.get(alert.kind, alert.kind)}: {alert.flow}"
    if count > 1:
        title += f" ({count}x)"
    fields = [f"*Flow*\n{alert.flow}", f"*Target*\n{alert.target or '-'}",
              f"*Event*\n{alert.event_id or '-'}",
              f"*Occurrences*\n{count} in {int(alert.window // 60) or 1} min" if count > 1 else
              f"*Delivery*\n{alert.delivery_id if alert.delivery_id is not None else '-'}"]
    if alert.kind != "run-failed":
        fields.append(f"*Stripe*\n{_event_text(alert)}")
    if alert.where:
        fields.append(f"*Where*\n{_code(alert.where)}")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{error or 'unknown'}```"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Fix*: {alert_fix.fix_for(alert)}\n"
                                                               f"Then: {_code(replay)}"}},
    ]
    context = []
    url = prefect_run_url(alert.run_id)
    if url:
        context.append(f"<{url}|Prefect run {alert.run_name or alert.run_id}>")
    if earlier:
        context.append(f"{earlier} more of the same in the previous window: "
                       f"{_code(alert_fix.replay_command(alert, earlier + 1, alert.group_key))} replays them all")
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context]})
    where = f" at {alert.where}" if alert.where else ""
    text = (f"{title}: {_event_text(alert)} -> {alert.target or '-'}{where}: {error[:200]} "
            f"(then: {replay})")
    return text, blocks


def build_repeat_message(row: dict, extra: int, *, last: Alert | None = None) -> tuple[str, list[dict]]:
    """The count of identical failures that came after the window's first message. ``last``: the
    latest of them as an Alert (its event, error kind and connection), for the fix."""
    what = {"dead": "dead-lettered", "plan-failed": "planning failures"}.get(row["kind"], "failed runs")
    last = last or Alert(row["kind"], row["flow"], row.get("target"), row.get("error") or "",
                         event_id=row.get("last_event_id"), delivery_id=row.get("last_delivery_id"))
    replay = alert_fix.replay_command(last, extra + 1, row.get("group_key") or last.group_key)
    text = f"{extra} more {what} for {row['flow']} -> {row['target'] or '-'} with the same error"
    latest = f"latest: {_event_text(last)} ({last.event_id or '-'})"
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*\n{latest}\n"
                                                               f"```{(row['error'] or '')[:ERROR_LIMIT]}```"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Fix*: {alert_fix.fix_for(last)}\n"
                                                               f"Then, for all of them: {_code(replay)}"}},
    ]
    url = prefect_run_url(row.get("last_run_id"))
    if url:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{url}|latest Prefect run>"}]})
    return f"{text}; {latest}. Then: {replay}", blocks


# ---- grouping (state in the store) ------------------------------------------------------

def record(store, alert: Alert, now: float | None = None) -> tuple[int, int] | None:
    """Count one occurrence. Returns (count, earlier-unreported) when a message should go now, else None."""
    from runner.store import alert_groups
    now = time.time() if now is None else now
    first = {"kind": alert.kind, "flow": alert.flow, "target": alert.target, "error": scrub(alert.error),
             "window": alert.window}
    last = {"last_event_id": alert.event_id, "last_delivery_id": alert.delivery_id, "last_run_id": alert.run_id}
    return alert_groups.count(store, alert.group_key, first, last, now)


def flush_grouped(app, now: float | None = None) -> int:
    """Send the counts of windows that closed with unreported failures; the number of messages sent."""
    if slack_config(app) is None:
        return 0
    from runner.store import alert_groups
    now = time.time() if now is None else now
    sent = 0
    for row in alert_groups.closed_unreported(app.store, now):
        if not alert_groups.mark_reported(app.store, row, now):   # another worker got it first, or a new failure
            continue
        text, blocks = build_repeat_message(row, row["count"] - row["reported"], last=_latest_of(app, row))
        if post_message(app, text, blocks, channel=_channel_for(app, row["flow"])):
            sent += 1
    return sent


def _latest_of(app, row: dict) -> Alert | None:
    """The latest occurrence of a group as an Alert, from its delivery row (error kind, connection)."""
    did = row.get("last_delivery_id")
    try:
        drow = app.store.delivery(did) if did is not None else None
    except Exception:  # noqa: BLE001 - the count still goes out
        drow = None
    if drow is None:
        return None
    alert = delivery_alert(app, {**drow, "error": row.get("error") or drow.get("last_error")})
    alert.run_id = row.get("last_run_id")
    return alert


def _window_for(app, flow_name: str) -> float:
    text = _flow_alert_settings(app, flow_name).get("window") or (app.project.raw.get("slack") or {}).get("window")
    try:
        return parse_duration(text) if text else DEFAULT_WINDOW
    except ValueError:
        return DEFAULT_WINDOW


def send_alert(app, alert: Alert, now: float | None = None) -> bool:
    """Group, then send when this occurrence opens a window. True when a message went out."""
    if slack_config(app) is None:
        return False
    alert.channel = alert.channel or _channel_for(app, alert.flow)
    alert.window = _window_for(app, alert.flow)
    decision = record(app.store, alert, now)
    if decision is None:
        return False
    count, earlier = decision
    text, blocks = build_message(alert, count, earlier=earlier)
    return post_message(app, text, blocks, channel=alert.channel)


def row_kind(row: dict) -> str:
    from runner.ingest.plan_rows import CONNECTION
    return "plan-failed" if row.get("connection") == CONNECTION else "dead"


def row_target(row: dict) -> str:
    return "(plan)" if row_kind(row) == "plan-failed" else f"{row['connection']} ({row['action']})"


def row_group_key(row: dict) -> str:
    """The group key a dead delivery row's alert has (``dlq replay --all --alert KEY`` matches on it)."""
    return Alert(row_kind(row), row["flow"], row_target(row), row.get("error") or row.get("last_error") or "").group_key


def delivery_alert(app, r: dict, facts: Any = None, run_id: str | None = None) -> Alert:
    """The alert for a dead delivery row (an operation, or a flow's plan row)."""
    error = r.get("error") or r.get("last_error") or ""
    if facts is None and r.get("event_id"):
        from runner.deliver.timeline import events_facts
        facts = events_facts(app.store, [r["event_id"]]).get(r["event_id"])
    return Alert(row_kind(r), r["flow"], row_target(r), error, event_id=r.get("event_id"),
                 delivery_id=r.get("id"), run_id=run_id, error_kind=r.get("kind") or r.get("error_kind"),
                 connection=r.get("connection"), connector_type=r.get("connector_type"),
                 flow_file=r.get("flow_file"), where=alert_fix.where_of(error, app.project.dir),
                 field=r.get("field"), facts=facts)


def alert_dead_letters(app, rows: Iterable[dict], run_id: str | None = None) -> int:
    """One alert per dead-lettered delivery row (grouped); the number of messages sent. A dead
    plan row (a flow that could not plan an event) is alerted as a planning failure."""
    rows = list(rows)
    if not rows or slack_config(app) is None:
        return 0
    from runner.deliver.timeline import events_facts
    facts = events_facts(app.store, [r.get("event_id") for r in rows])
    return sum(send_alert(app, delivery_alert(app, r, facts.get(r.get("event_id")), run_id)) for r in rows)


def alert_flow_run_failed(app, *, flow_name: str, run_id: str | None, run_name: str | None, message: str,
                          flow_file: str | None = None) -> bool:
    name = flow_name
    if flow_file:
        try:
            name = app.flow(flow_file).name
        except Exception:  # noqa: BLE001
            name = f"{flow_name} ({flow_file})"
    return send_alert(app, Alert("run-failed", name, None, message, run_id=run_id, run_name=run_name))


def _problem_listing(problems: list, limit: int = 20) -> str:
    """``file:line:col: message`` lines (scrubbed), the first ``limit`` of them."""
    listing = "\n".join(scrub(str(p)) for p in problems[:limit])
    if len(problems) > limit:
        listing += f"\n... and {len(problems) - limit} more"
    return listing


def alert_config_refused(app, problems: list, *, files: str, process: str = "serve") -> bool:
    """A configuration edit that did not validate was refused (hot reload, ``runner.operate.reload``):
    the problems as ``file:line:col: message`` and what to do; the previous version still runs."""
    import os
    import socket
    listing = _problem_listing(problems)
    where = f"ledgerflow {process} on {socket.gethostname()} (pid {os.getpid()})"
    title = f"Configuration change refused: {files}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{where}* keeps running the previous version."}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Problems*\n```{listing[:2900]}```"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "Fix the file (check it with "
                                     + _code("ledgerflow validate") + "); the next valid save is taken "
                                     "without a restart."}},
    ]
    text = f"{title}: {len(problems)} problem(s); {where} keeps the previous version. {listing[:500]}"
    return post_message(app, text, blocks)


def alert_flows_broken(app, problems: list[str], waiting: list[str]) -> bool:
    """``ledgerflow serve`` started with flows that do not load (``runner.operate.server.supervisor``):
    webhooks are received into the inbox; the services that plan (``waiting``) start once a
    fix is saved."""
    import os
    import socket
    where = f"ledgerflow serve on {socket.gethostname()} (pid {os.getpid()})"
    listing = _problem_listing(problems)
    title = f"Flows do not load: {len(problems)} problem(s)"
    held = ", ".join(_code(w) for w in waiting) or "nothing"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{where}* receives webhooks into the inbox; "
                                     f"{held} wait(s) for the flows, so no event is planned yet."}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Problems*\n```{listing[:2900]}```"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "Fix the files (check them with "
                                     + _code("ledgerflow validate") + "); the next valid save is taken "
                                     "without a restart, and the waiting events are planned then."}},
    ]
    return post_message(app, f"{title} on {where}; webhooks are still received. {listing[:500]}", blocks)


def alert_service_failed(app, service: str, reason: str) -> bool:
    """A background service of ``ledgerflow serve`` did not start or stopped working
    (``runner.operate.server.supervisor``): webhooks are still received, the rest waits for a fix."""
    import os
    import socket
    where = f"ledgerflow serve on {socket.gethostname()} (pid {os.getpid()})"
    reason = scrub(reason)[:ERROR_LIMIT]
    title = f"Service failed: {service}"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{where}*: {_code(service)} is not running; "
                                     "webhooks are still received and kept in the inbox."}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n```{reason}```"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "Fix the cause, then restart serve; "
                                     + _code("GET /healthz") + " shows each service's state."}},
    ]
    return post_message(app, f"{title} on {where}: {reason}", blocks)
