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
DEST = ("core runner/posting/build.py _counter: a destination charge with Stripe's transfer_data[amount] "
        "(application_fee_amount null) credits Connected Accounts Payable with the whole gross and books no "
        "Application Fee Revenue; the transfer then debits only transfer_data.amount, so what the platform "
        "keeps (gross - transfer_data.amount, e.g. ch_..262B 305.07 - 240.48 = 64.59) stays in Connected "
        "Accounts Payable instead of Application Fee Revenue")
ADJ = ("other_adjustment (e.g. txn_..453B, -20.23 'network cost') has no webhook event and no event flow books "
       "it; the payout reconciliation books into the IIF only, so Stripe Adjustments stays 0 and clearing "
       "is over by the adjustment")
QBD_SAGE_FAILED = ("a payout that fails before it is paid (po_..475B, 729.93: payout.failed, never payout.paid) "
                   "is booked only as its failure's return (Dr Clearing / Cr Bank, keyed by the failure's "
                   "balance transaction); the payout itself (Dr Bank / Cr Clearing) is never booked "
                   "(flows/{}-payouts.yaml has no route booking the payout from payout.failed, as "
                   "qbo-payouts' failed-payout and stripe-movements-to-csv's failed-payout do): Operating Bank "
                   "-729.93, Stripe Clearing +729.93")
IIF_RECON = ("runner/dispatch.py _plan runs the payout reconciliation inline when it plans payout.paid, before "
             "the payout's movement rows are delivered (reconciliation rows 1-8 precede the first "
             "stripe-movements-to-iif row): no transaction has a sent posting yet, so every fee goes into "
             "the payout journal (Dr Stripe Fees / Cr Clearing, e.g. po_..470B 71.79) although "
             "stripe-movements-to-iif books each fee with its movement; the journal's key "
             "(payout-reconciliation:journal:recon_po_...) makes that first booking final, and the later "
             "reconciliation reports 100% without seeing it: Stripe Fees doubled for paid-out movements "
             "(+217.93), clearing short by as much; and the failed payout po_..475B carried the "
             "other_adjustment txn_..453B (-20.23), which _book_failed never journals (Stripe Adjustments 0)")
KNOWN: dict[tuple[str, str, str | None], str] = {}
for _t in H.TARGETS:
    KNOWN[("categories", _t, None)] = DEST
for _t in ("csv", "quickbooks_online", "quickbooks_desktop", "sage"):
    KNOWN[("clearing", _t, None)] = ADJ
for _t in ("quickbooks_desktop", "sage"):
    KNOWN[("clearing", _t, None)] = QBD_SAGE_FAILED.format("qbd" if _t == "quickbooks_desktop" else "sage") \
        + "; and " + ADJ
KNOWN[("once", "iif", None)] = (
    "mappings/iif/reconcile_journal.yaml and reconcile_transfer.yaml write DOCNUM `payout.id | clip(11)`, the "
    "id's head ('po_30000010' for every payout of the scenario), and the journal's memo ('Stripe balance') names "
    "no payout: the payout journals of po_..470B, ..481B, ..486B are three GENERAL JOURNALs with one document "
    "number, indistinguishable from one journal booked three times (the movement journals use the id's tail, "
    "posting.key[-11:])")
KNOWN[("clearing", "iif", None)] = IIF_RECON
KNOWN[("categories", "iif", None)] = DEST + "; and " + IIF_RECON


KNOWN[("once", "iif", "summary")] = KNOWN[("once", "iif", None)]
KNOWN[("categories", "iif", "summary")] = (
    "summary mode (runner/reconcile/journal.py summary_lines, one line per reporting category): a destination "
    "charge's gross goes to Sales and its transfer to Connected Accounts Payable (agent treatment not applied: "
    "Sales over by the destination gross, Connected Accounts Payable +1705.49, Application Fee Revenue short); "
    "the failed payout po_..475B's movements are never booked by category, its returned funds (payout_reversal "
    "+729.93 in po_..481B) are credited to Stripe Adjustments; the dispute fee (15.00) goes to Stripe Fees "
    "instead of Dispute Fees")


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


@pytest.mark.xfail(strict=True, reason=DEST + "; " + ADJ + "; " + IIF_RECON)
@PROPERTY
@given(seed=st.integers(min_value=2, max_value=10 ** 6))
def test_property_file_books_equal_the_truth(seed):
    scenario = generate(seed)
    with tempfile.TemporaryDirectory(prefix="books-prop-") as tmp:
        run = H.run(Path(tmp), scenario, flows=H.FILE_FLOWS)
        for target in ("iif", "csv"):
            check = H.check_books(run, target)
            assert check.problems["clearing"] == [] and check.problems["categories"] == [], (seed, check.all())
