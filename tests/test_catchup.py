"""Missed-event catch-up through the stripe SDK against the Stripe API stand-in."""

from __future__ import annotations

import time

import pytest

from runner.app import App
from runner.cli import main
from runner.core import jsonio
from runner.core.errors import LedgerflowError
from runner.ingest.catchup import RETENTION_SECONDS, CatchUpService, background, catch_up, scheduled_pass
from runner.language.fixtures import event_from_fixture
from runner.language.spec import load_project
from tests.standins.stripe_api import DEFAULT_KEY, StripeStandin
from tests.support.servers import serve_app
from tests.webhook_helpers import stripe_project

DAY = 86400
ACCT = "acct_1CatchUpSellerA"


def stripe_event(n: int, created: int, account: str | None = None, type_: str = "charge.succeeded") -> dict:
    ev = event_from_fixture(type_, overrides={"amount": 1000 + n})
    ev["id"] = f"evt_cu_{account or 'platform'}_{n:05d}"
    ev["created"] = created
    return ev


@pytest.fixture
def stand():
    standin = StripeStandin()
    with serve_app(standin.app) as server:
        standin.url = server.url
        yield standin


@pytest.fixture
def make_app(tmp_path, store_url, stand, monkeypatch, stripe_fixtures):
    monkeypatch.setenv("LF_TEST_STRIPE_KEY", DEFAULT_KEY)

    def make(accounts=(ACCT,), extra="") -> App:
        section = f"  api_base: {stand.url}\n  max_network_retries: 1\n"
        if accounts:
            section += f"  connected_accounts: [{', '.join(accounts)}]\n"
        path = stripe_project(tmp_path / "proj", store_url, extra=section + extra)
        monkeypatch.setenv("LEDGERFLOW_PROJECT", str(path))
        return App(load_project(path))
    return make


def test_pages_platform_and_connected_accounts_inserting_only_what_is_missing(stand, make_app):
    now = int(time.time())
    platform = [stripe_event(i, now - 3 * DAY + i * 60) for i in range(250)]     # three pages of 100
    seller = [stripe_event(i, now - 2 * DAY + i, ACCT) for i in range(30)]
    stand.add_many(platform)
    stand.add_many(seller, account=ACCT)
    app = make_app()
    for ev in platform[:5]:                                                      # these came in by webhook
        app.store.add_event(ev, jsonio.dumps(ev), "webhook:platform")

    summary = catch_up(app, now - 4 * DAY)

    assert summary.ok and (summary.seen, summary.inserted) == (280, 275)
    assert [(s.account, s.pages, s.inserted) for s in summary.scopes] == [(None, 3, 245), (ACCT, 1, 30)]
    assert stand.calls["GET /v1/events"] == 4
    assert app.store.count_events() == 280
    row = app.store.get_event(seller[0]["id"])
    assert (row["account"], row["source"], row["status"]) == (ACCT, "catch-up", "pending")  # Connect: account set
    assert app.store.get_event(platform[0]["id"])["source"] == "webhook:platform"             # untouched
    # a second run finds nothing new
    again = catch_up(app, now - 4 * DAY)
    assert (again.seen, again.inserted) == (280, 0)


def test_window_is_created_gte_since_and_lte_until(stand, make_app):
    now = int(time.time())
    evs = [stripe_event(i, now - (10 - i) * DAY) for i in range(10)]            # one a day, 10..1 days ago
    stand.add_many(evs)
    app = make_app(accounts=())
    s = catch_up(app, now - 6 * DAY, until=now - 3 * DAY)
    assert s.inserted == 4
    assert app.store.event_ids(e["id"] for e in evs) == {e["id"] for e in evs[4:8]}


def test_since_older_than_30_days_says_so_and_starts_at_retention(stand, make_app):
    now = int(time.time())
    old = stripe_event(1, now - 31 * DAY)            # (the stand-in still has it; Stripe would not)
    recent = stripe_event(2, now - 29 * DAY)
    stand.add_many([old, recent])
    app = make_app(accounts=())
    s = catch_up(app, "2000-01-01", now=now)
    assert s.notes and "older than Stripe's 30-day event retention" in s.notes[0]
    assert s.since == now - RETENTION_SECONDS
    assert app.store.event_ids([old["id"], recent["id"]]) == {recent["id"]}


def test_rate_limited_page_is_retried_after_retry_after(stand, make_app):
    now = int(time.time())
    stand.add_many(stripe_event(i, now - DAY + i) for i in range(150))
    stand.inject(429, count=2, path_prefix="/v1/events", retry_after=0)
    app = make_app(accounts=())
    s = catch_up(app, now - 2 * DAY)
    assert s.ok and s.inserted == 150
    assert stand.calls["GET /v1/events"] == 2         # the two 429s were answered before counting


def test_bad_api_key_is_said_plainly(stand, make_app, monkeypatch):
    app = make_app(accounts=())
    monkeypatch.setenv("LF_TEST_STRIPE_KEY", "sk_test_wrong_key_123456")
    with pytest.raises(LedgerflowError, match=r"Stripe rejected stripe.api_key \(401\)"):
        catch_up(app, int(time.time()) - DAY)


@pytest.mark.one_store
def test_missing_api_key_names_the_setting(tmp_path, store_url, monkeypatch):
    monkeypatch.delenv("LF_TEST_STRIPE_KEY", raising=False)
    app = App(load_project(stripe_project(tmp_path / "p", store_url)))
    with pytest.raises(LedgerflowError, match="stripe.api_key: environment variable LF_TEST_STRIPE_KEY is not set"):
        catch_up(app, int(time.time()) - DAY)


def test_an_unknown_connected_account_fails_alone(stand, make_app):
    now = int(time.time())
    stand.add(stripe_event(1, now - 100))
    app = make_app(accounts=("acct_1NobodyKnows",))
    s = catch_up(app, now - DAY)
    assert not s.ok and s.inserted == 1
    assert "acct_1NobodyKnows: failed" in s.lines()[-1] and "403" in s.lines()[-1]


@pytest.mark.one_store
def test_bad_since_is_rejected_with_the_expected_form(make_app):
    with pytest.raises(LedgerflowError, match=r"--since: 'last tuesday' is not a date \(expected YYYY-MM-DD"):
        catch_up(make_app(), "last tuesday")


def test_cli_catch_up(stand, make_app, capsys):
    now = int(time.time())
    stand.add_many([stripe_event(1, now - 2 * DAY), stripe_event(2, now - DAY, ACCT)], account=None)
    stand.add(stripe_event(3, now - DAY, ACCT), account=ACCT)
    make_app()
    since = time.strftime("%Y-%m-%d", time.gmtime(now - 5 * DAY))
    assert main(["stripe", "catch-up", "--since", since]) == 0
    out = capsys.readouterr().out
    assert "platform: 2 event(s) since" in out and f"connected account {ACCT}: 1 event(s)" in out
    assert "3 event(s) added to the inbox" in out


def test_scheduled_pass_starts_where_the_last_one_ended(stand, make_app):
    now = time.time()
    stand.add(stripe_event(1, int(now - 2 * DAY)))
    stand.add(stripe_event(2, int(now - 4 * DAY)))                 # outside the first pass's 3-day look-back
    app = make_app(accounts=())
    first = scheduled_pass(app, now=now)
    assert first.inserted == 1
    late = stripe_event(3, int(now - 2 * 3600))                    # before the watermark's hour of overlap
    inside = stripe_event(4, int(now - 1800))                      # within the overlap
    fresh = stripe_event(5, int(now + 600))
    stand.add_many([late, inside, fresh])
    second = scheduled_pass(app, now=now + 3600)
    assert second.since == int(now - 3600)
    assert app.store.event_ids([late["id"], inside["id"], fresh["id"]]) == {inside["id"], fresh["id"]}


def test_background_service_is_off_without_api_key_and_runs_with_it(stand, make_app, tmp_path, store_url):
    off = App(load_project(stripe_project(tmp_path / "nokey", store_url).parent / "ledgerflow.yaml"))
    off.project.raw["stripe"].pop("api_key")
    assert not isinstance(background(off), CatchUpService)
    stand.add(stripe_event(9, int(time.time()) - 600))
    app = make_app(accounts=())
    svc = background(app)
    assert isinstance(svc, CatchUpService) and svc.interval == 3600
    svc.start()
    try:
        deadline = time.monotonic() + 30
        while svc.last is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        svc.stop()
    assert svc.last is not None and svc.last.inserted == 1


def test_cli_says_plainly_when_since_is_beyond_retention(stand, make_app, capsys):
    make_app(accounts=())
    assert main(["stripe", "catch-up", "--since", "2020-01-01"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: --since 2020-01-01 00:00 UTC is older than Stripe's 30-day event retention")


@pytest.mark.one_store
def test_until_earlier_than_since_is_an_error_not_an_empty_window(stand, make_app, capsys):
    """issue #14 item 11: --until before --since used to be accepted and fetch nothing, silently."""
    app = make_app(accounts=())
    with pytest.raises(LedgerflowError, match=r"--until 2026-11-01 00:00 UTC is earlier than --since 2026-11-20"):
        catch_up(app, "2026-11-20", until="2026-11-01")
    assert main(["stripe", "catch-up", "--since", "2026-11-20", "--until", "2026-11-01"]) != 0
    err = capsys.readouterr().err
    assert "is earlier than --since" in err
    assert sum(stand.requests.values()) == 0                                 # nothing was asked of Stripe
