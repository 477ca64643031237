"""Missed-event catch-up through Stripe's Events API.

``catch_up(app, since, until=None)`` pages through ``GET /v1/events``
(``created[gte]``/``created[lte]``, 100 a page, ``starting_after``) with the
stripe SDK, for the platform and for every ``stripe.connected_accounts``
entry (``Stripe-Account``), and inserts the events the inbox lacks. An
endpoint that was down longer than Stripe's three days of webhook retries so
loses nothing. Stripe keeps events for 30 days; a ``since`` older than that
is said plainly and the window starts where Stripe's retention does.

``CatchUpService`` runs it on a schedule inside ``ledgerflow serve`` (a
serve_hooks BACKGROUND service), starting each pass where the last
successful one ended (kept in the store), minus an hour of overlap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from runner.core import jsonio
from runner.core.errors import LedgerflowError
from runner.core.services import PeriodicService
from runner.language.stripe_config import stripe_settings

log = logging.getLogger("ledgerflow.catchup")

RETENTION_SECONDS = 30 * 86400
PAGE = 100
SOURCE = "catch-up"
WATERMARK_NS = "stripe.catch_up"
OVERLAP = 3600.0


@dataclass
class ScopeResult:
    account: str | None
    seen: int = 0
    inserted: int = 0
    pages: int = 0
    error: str | None = None


@dataclass
class CatchUpSummary:
    since: int
    until: int | None
    notes: list[str] = field(default_factory=list)
    scopes: list[ScopeResult] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return sum(s.seen for s in self.scopes)

    @property
    def inserted(self) -> int:
        return sum(s.inserted for s in self.scopes)

    @property
    def ok(self) -> bool:
        return not any(s.error for s in self.scopes)

    def lines(self) -> list[str]:
        out = list(self.notes)
        for s in self.scopes:
            who = f"connected account {s.account}" if s.account else "platform"
            if s.error:
                out.append(f"{who}: failed after {s.seen} event(s): {s.error}")
            else:
                out.append(f"{who}: {s.seen} event(s) since {_iso(self.since)}, {s.inserted} new in the inbox")
        return out


def to_timestamp(value: Any, what: str = "--since") -> int:
    """Unix seconds from an int, a date, a datetime (naive = UTC) or an ISO string."""
    if isinstance(value, bool):
        raise LedgerflowError(f"{what}: expected a date like 2026-11-01 or a timestamp")
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise LedgerflowError(f"{what}: {value!r} is not a date (expected YYYY-MM-DD, an ISO date-time "
                                  "or a unix timestamp)") from None
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp())
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp())
    raise LedgerflowError(f"{what}: expected a date like 2026-11-01 or a timestamp, got {type(value).__name__}")


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def catch_up(app: Any, since: Any, until: Any = None, *, client: Any = None, now: float | None = None,
             accounts: list[str] | None = None) -> CatchUpSummary:
    """Insert the Stripe events created in [since, until] that the inbox lacks."""
    import stripe

    settings = stripe_settings(app.project.raw.get("stripe"), app.project.file)
    now = time.time() if now is None else now
    since_ts = to_timestamp(since)
    until_ts = to_timestamp(until, "--until") if until is not None else None
    if until_ts is not None and until_ts < since_ts:
        raise LedgerflowError(f"--until {_iso(until_ts)} is earlier than --since {_iso(since_ts)}: "
                              "the window would be empty; swap them or leave --until out (now)")
    summary = CatchUpSummary(since_ts, until_ts)
    oldest = int(now) - RETENTION_SECONDS
    if since_ts < oldest:
        summary.notes.append(
            f"note: --since {_iso(since_ts)} is older than Stripe's 30-day event retention: events created "
            f"before {_iso(oldest)} can no longer be fetched from Stripe; catching up from {_iso(oldest)}")
        since_ts = summary.since = oldest
    if client is None:
        from runner.language.stripe_client import stripe_client
        client = stripe_client(app, settings)
    scopes: list[str | None] = [None, *(settings.connected_accounts if accounts is None else accounts)]
    for account in scopes:
        result = ScopeResult(account)
        summary.scopes.append(result)
        try:
            _catch_up_scope(app.store, client, account, since_ts, until_ts, result)
        except stripe.AuthenticationError:
            raise LedgerflowError("Stripe rejected stripe.api_key (401); check the key the reference names") from None
        except stripe.APIConnectionError as exc:
            raise LedgerflowError(f"cannot reach the Stripe API at {settings.api_base or 'api.stripe.com'}: "
                                  f"{exc.user_message or type(exc).__name__}") from None
        except stripe.StripeError as exc:
            result.error = f"{exc.http_status or ''} {exc.user_message or type(exc).__name__}".strip()
    return summary


def _catch_up_scope(store, client, account: str | None, since: int, until: int | None, result: ScopeResult) -> None:
    created: dict[str, int] = {"gte": since}
    if until is not None:
        created["lte"] = until
    options = {"stripe_account": account} if account else {}
    after = None
    while True:
        params: dict[str, Any] = {"created": created, "limit": PAGE}
        if after:
            params["starting_after"] = after
        page = _list_page(client, params, options)
        body = jsonio.loads(page.last_response.body)   # the raw page: amounts and rates stay exact
        events = [e for e in body.get("data", []) if isinstance(e, dict) and e.get("id")]
        result.pages += 1
        result.seen += len(events)
        if events:
            known = store.event_ids(e["id"] for e in events)
            rows = []
            for ev in events:
                if ev["id"] in known:
                    continue
                if account and not ev.get("account"):
                    ev["account"] = account
                rows.append((ev, jsonio.dumps(ev), SOURCE))
            if rows:
                result.inserted += sum(store.add_events(rows))
            after = events[-1]["id"]
        if not body.get("has_more") or not events:
            return


def _list_page(client, params: dict, options: dict, attempts: int = 6):
    """One page of /v1/events. The SDK retries 5xx and 409 but not 429: wait as
    Stripe's ``Retry-After`` says (else back off exponentially) and ask again."""
    import stripe

    for attempt in range(attempts):
        try:
            return client.v1.events.list(params=params, options=options)
        except stripe.RateLimitError as exc:
            if attempt == attempts - 1:
                raise
            from runner.language.stripe_client import retry_after
            delay = retry_after(exc)
            if delay is None:
                delay = min(30.0, 0.5 * 2 ** attempt)
            log.info("Stripe rate limit (429) on /v1/events; waiting %.1fs", delay)
            time.sleep(min(delay, 60.0))
    raise AssertionError("unreachable")


# ---- on a schedule inside `ledgerflow serve` ----------------------------------

def _watermark(store, account: str | None) -> float | None:
    key = account or "platform"
    v = store.kv_get_many(WATERMARK_NS, [key]).get(key)
    return float(v) if v is not None else None


def _set_watermark(store, account: str | None, ts: float) -> None:
    store.kv_put_many(WATERMARK_NS, {account or "platform": repr(ts)})


def scheduled_pass(app: Any, *, client: Any = None, now: float | None = None) -> CatchUpSummary:
    """One scheduled catch-up: from the last successful pass (minus an hour), else ``lookback`` ago."""
    settings = stripe_settings(app.project.raw.get("stripe"), app.project.file)
    now = time.time() if now is None else now
    marks = [_watermark(app.store, a) for a in [None, *settings.connected_accounts]]
    since = min((m - OVERLAP) if m is not None else now - settings.catch_up_lookback for m in marks)
    summary = catch_up(app, int(since), client=client, now=now)
    for s in summary.scopes:
        if not s.error:
            _set_watermark(app.store, s.account, now)
    return summary


class CatchUpService(PeriodicService):
    """Runs ``scheduled_pass`` at start and then every ``interval`` seconds."""

    name = "stripe-catch-up"

    def __init__(self, app: Any, interval: float):
        super().__init__(interval)
        self.app = app
        self.last: CatchUpSummary | None = None

    def run_pass(self) -> bool:
        self.last = scheduled_pass(self.app)
        for line in self.last.lines():
            log.info("catch-up: %s", line)
        return False


class _Off:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def background(app: Any):
    """serve_hooks.BACKGROUND entry: scheduled catch-up when ``stripe.api_key`` is set."""
    settings = stripe_settings(app.project.raw.get("stripe"), app.project.file)
    if settings.api_key_ref is None or settings.catch_up_interval <= 0:
        log.info("scheduled Stripe catch-up is off (no stripe.api_key, or catch_up.interval is 0)")
        return _Off()
    return CatchUpService(app, settings.catch_up_interval)
