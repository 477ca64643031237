"""The books harness (#12 "Proof"): a generated Stripe month (platform + two connected
accounts, six currencies, refunds, disputes, application fees, transfers, an adjustment,
negative and failed payouts, duplicated and out-of-order events, ``missing`` dropped
movements) sent as signed webhooks through ``ledgerflow serve``, dispatched and delivered by
every shipped flow into every target, then each target's books scored by Beancount against
the scenario's truth (tests/books/harness.py). One run per kind of books (single-currency,
multicurrency) serves every check; each invariant is its own test, per target, so a failure
names the target and the invariant. Known defects are strict xfails with their cause."""

from __future__ import annotations

import tempfile
from decimal import Decimal
from pathlib import Path

import pytest

pytest.importorskip("beancount")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.books import harness as H  # noqa: E402
from tests.books.scenario import generate  # noqa: E402

SEED = 1
MISSING = 2
MODES = ["single-currency", "multicurrency"]

# ---- known defects: (invariant, target, mode or None for both) -> cause ---------------------
# Every defect the harness found when it was written (destination charges' revenue, adjustments
# no event books, failed payouts in QuickBooks Desktop and Sage, dispatch-time reconciliations
# booking fees twice, IIF payout document numbers, summary mode by category) is fixed; a new one
# goes here as a strict xfail with its cause, so the fix is noticed when it lands.
KNOWN: dict[tuple[str, str, str | None], str] = {}


def known(request, invariant: str, target: str, mode: str) -> None:
    reason = KNOWN.get((invariant, target, mode)) or (
        None if mode == "summary" else KNOWN.get((invariant, target, None)))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


# ---- the runs ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=MODES)
def books_run(request, tmp_path_factory):
    scenario = generate(SEED, missing=MISSING)
    run = H.run(tmp_path_factory.mktemp(f"books-{request.param}"), scenario,
                multicurrency=request.param == "multicurrency")
    yield request.param, run


@pytest.fixture(scope="module")
def summary_run(tmp_path_factory):
    """Summary mode, the reconciliation the only booking: a project whose only flow is it (IIF)."""
    scenario = generate(SEED)
    return H.run(tmp_path_factory.mktemp("books-summary"), scenario, flows=("payout-reconciliation",),
                 reconcile_mode="summary")


def test_every_event_accepted_and_every_row_delivered(books_run):
    mode, run = books_run
    bad = [p for p in run.posted if not 200 <= p[1] < 300]
    assert not bad, bad[:5]
    assert len(run.posted) == len(run.scenario.events)
    assert run.failures() == []
    assert run.app.store.count_events("pending") == 0


@pytest.mark.parametrize("target", H.TARGETS)
@pytest.mark.parametrize("invariant", H.INVARIANTS)
def test_books(books_run, target, invariant, request):
    mode, run = books_run
    known(request, invariant, target, mode)
    check = H.check_books(run, target, exclude=run.scenario.missing)
    assert check.problems[invariant] == [], "\n".join(check.problems[invariant])


def test_multicurrency_books_hold_presentment_currencies(books_run):
    mode, run = books_run
    if mode != "multicurrency":
        pytest.skip("multicurrency books only")
    presentment = {"EUR", "GBP", "JPY", "ISK"}     # BHD: 3 decimals, QuickBooks Desktop books it in USD by design
    for target in ("quickbooks_online", "quickbooks_desktop", "sage"):
        got = H.document_currencies(run, target)
        assert presentment <= got, (target, got)
        customers = H.currency_customers(run, target)
        assert presentment <= set(customers), (target, customers)


def test_reconciliation_finds_exactly_the_missing_movements(books_run):
    mode, run = books_run
    report = run.report
    found = {(c.txn_id, c.kind) for _, c in report.exceptions}
    expected = H.expected_exceptions(run.scenario)
    assert expected, "the scenario must drop at least one paid-out platform movement"
    assert found == expected
    assert report.transactions > 0
    rest = report.transactions - len(expected)
    automatic = report.transactions - len(report.exceptions)
    assert Decimal(100) * automatic / rest == Decimal(100)      # 100 % of the rest, per_transaction mode
    status = {r.payout_id: r.status for r in report.results}
    assert set(status) == {po["id"] for po, _ in run.scenario.payouts}          # every payout checked
    for po, _ in run.scenario.payouts:
        assert status[po["id"]] in (("failed",) if po["status"] == "failed" else ("reconciled", "exceptions"))


@pytest.mark.parametrize("invariant", H.INVARIANTS)
def test_summary_mode_books_balance(summary_run, invariant, request):
    run = summary_run
    known(request, invariant, "iif", "summary")
    assert run.failures() == []
    assert run.report.exceptions == []
    check = H.check_books(run, "iif", expected=H.expected_summary(run.scenario))
    assert check.problems[invariant] == [], "\n".join(check.problems[invariant])


def test_postgresql_store_gives_the_same_file_books(books_run, request, tmp_path):
    mode, run = books_run
    if mode != "single-currency":
        pytest.skip("one PostgreSQL run")
    pg = request.getfixturevalue("pg_url")
    pg_run = H.run(tmp_path, generate(SEED, missing=MISSING), store_url=pg)
    try:
        for target in ("iif", "csv"):
            assert H.trial_balance(pg_run.books(target)).balances == H.trial_balance(run.books(target)).balances
        assert {(c.txn_id, c.kind) for _, c in pg_run.report.exceptions} == H.expected_exceptions(run.scenario)
    finally:
        pg_run.app.store.close() if hasattr(pg_run.app.store, "close") else None


# ---- property-based: the file books over generated seeds -------------------------------------

PROPERTY = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],      # no shrinking: an example is a full run
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@PROPERTY
@given(seed=st.integers(min_value=2, max_value=10 ** 6), missing=st.integers(min_value=1, max_value=3))
def test_property_file_books_balance_and_reconcile_exactly(seed, missing):
    scenario = generate(seed, missing=missing)
    with tempfile.TemporaryDirectory(prefix="books-prop-") as tmp:
        run = H.run(Path(tmp), scenario, flows=H.FILE_FLOWS)
        assert all(200 <= p[1] < 300 for p in run.posted)
        assert run.failures() == []
        for target in ("iif", "csv"):
            check = H.check_books(run, target, exclude=scenario.missing)
            for inv in ("balanced", "once", "currencies", "connect"):
                if (inv, target, None) in KNOWN:
                    continue            # a known defect (strict xfail above)
                assert check.problems[inv] == [], (seed, target, inv, check.problems[inv])
        found = {(c.txn_id, c.kind) for _, c in run.report.exceptions}
        assert found == H.expected_exceptions(scenario), seed


@PROPERTY
@given(seed=st.integers(min_value=2, max_value=10 ** 6))
def test_property_file_books_equal_the_truth(seed):
    scenario = generate(seed)
    with tempfile.TemporaryDirectory(prefix="books-prop-") as tmp:
        run = H.run(Path(tmp), scenario, flows=H.FILE_FLOWS)
        for target in ("iif", "csv"):
            check = H.check_books(run, target)
            assert check.problems["clearing"] == [] and check.problems["categories"] == [], (seed, check.all())


@settings(max_examples=2, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=2, max_value=10 ** 6), multicurrency=st.booleans())
def test_property_every_target_holds_every_invariant(seed, multicurrency):
    """Every shipped flow set, every target, on generated months (currencies, Connect shapes, refunds,
    disputes, duplicated and out-of-order events, a missing one): the books equal Stripe's truth."""
    scenario = generate(seed, missing=1)
    with tempfile.TemporaryDirectory(prefix="books-prop-all-") as tmp:
        run = H.run(Path(tmp), scenario, multicurrency=multicurrency)
        assert run.failures() == []
        for target in H.TARGETS:
            check = H.check_books(run, target, exclude=scenario.missing)
            problems = {k: v for k, v in check.problems.items() if v}
            assert problems == {}, (seed, multicurrency, target, problems)
        assert {(c.txn_id, c.kind) for _, c in run.report.exceptions} == H.expected_exceptions(scenario), seed
