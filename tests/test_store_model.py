"""Typed deliveries and their one state machine (runner/store/model.py, runner/store/transitions.py),
and the rule that only runner/store touches the store's tables."""

from __future__ import annotations

import ast
import itertools
import time
from decimal import Decimal
from pathlib import Path

import pytest

from runner.language.planner import Operation
from runner.store.model import FIELDS, Delivery, State
from runner.store.tables import deliveries
from runner.store.transitions import ALLOWED, IllegalTransition, check, require
from tests.store_helpers import force_state

ROOT = Path(__file__).resolve().parent.parent

LEGAL = {
    ("pending", "sending"), ("pending", "sent"),
    ("sending", "sending"), ("sending", "sent"), ("sending", "retrying"), ("sending", "dead"),
    ("retrying", "sending"), ("retrying", "sent"), ("retrying", "pending"),
    ("dead", "pending"), ("dead", "sent"), ("dead", "discarded"),
    ("discarded", "sent"),
}


def op(key: str, payload=None) -> Operation:
    return Operation(flow="f", route="r", connection="csv", connector_type="csv", action="row",
                     idempotency_key=key, payload=payload or {"amount": Decimal("12.30")}, event_id="evt_1")


def test_the_states_are_the_ones_the_table_holds():
    assert {s.value for s in State} == {"pending", "sending", "sent", "retrying", "dead", "discarded"}
    assert set(ALLOWED) == set(State)


def test_every_legal_transition_is_allowed():
    assert {(a.value, b.value) for a, targets in ALLOWED.items() for b in targets} == LEGAL
    for old, new in LEGAL:
        assert check(7, old, new) is State(new)


def test_every_other_transition_is_refused_naming_the_delivery_and_both_states():
    for old, new in itertools.product([s.value for s in State], repeat=2):
        if (old, new) in LEGAL:
            continue
        with pytest.raises(IllegalTransition) as err:
            check(7, old, new)
        assert f"delivery 7: a delivery cannot go from {old} to {new}" in str(err.value)


def test_the_refusals_the_dead_letter_queue_relies_on():
    with pytest.raises(IllegalTransition, match="from sent to retrying; from sent it may go to nothing"):
        check(1, "sent", "retrying")
    with pytest.raises(IllegalTransition, match="from dead to sending; from dead it may go to discarded, pending, sent"):
        check(2, "dead", "sending")
    with pytest.raises(IllegalTransition, match="claim: a delivery cannot go from dead to sending"):
        require(("pending", "dead"), "sending", "claim")
    with pytest.raises(ValueError):
        check(3, "pending", "lost")          # not a state at all


def test_a_delivery_round_trips_through_the_store_typed(store):
    [(did, created)] = store.add_deliveries([op("k-typed")], max_attempts=4, flow_file="flows/f.yaml")
    row = store.delivery(did)
    assert created and isinstance(row, Delivery)
    assert (row.id, row.idempotency_key, row.flow, row.flow_file, row.state, row.attempts, row.max_attempts) == \
        (did, "k-typed", "f", "flows/f.yaml", State.PENDING, 0, 4)
    assert row.payload == {"amount": Decimal("12.30")} and type(row.payload["amount"]) is Decimal
    assert set(FIELDS) == {c.name for c in deliveries.columns}        # every column, nothing else
    assert dict(row) == {f: getattr(row, f) for f in FIELDS}          # the mapping shim: row["key"]
    assert row["state"] == "pending" and row.get("sent_at") is None and row.get("nope", 5) == 5
    with pytest.raises(AttributeError):
        row.state = State.SENT                                      # frozen: states change in the store
    assert store.delivery_by_key("k-typed") == row
    [claimed] = store.claim("w1", limit=5)
    assert isinstance(claimed, Delivery) and claimed.state is State.SENDING and claimed.claimed_by == "w1"
    assert store.find_deliveries(state="sending", claimed_by="w1") == [store.delivery(did)]
    assert store.find_deliveries(state=["pending", "dead"]) == []


def test_the_store_refuses_an_illegal_outcome_and_keeps_the_row(store):
    [(did, _)] = store.add_deliveries([op("k-sent")])
    store.claim("w1")
    store.finish([{"id": did, "state": "sent", "target_ref": "doc-1"}], worker="w1")
    with pytest.raises(IllegalTransition, match=f"delivery {did}: a delivery cannot go from sent to retrying"):
        store.finish([{"id": did, "state": "retrying", "error": "late", "next_attempt_at": time.time()}])
    row = store.delivery(did)
    assert (row.state, row.target_ref, row.attempts) == (State.SENT, "doc-1", 1)
    with pytest.raises(IllegalTransition, match="from sent to pending"):
        store.requeue(row, {}, budget=3)
    with pytest.raises(IllegalTransition, match="set_delivery does not change states"):
        store.set_delivery(did, state="pending")
    assert store.discard(did) is False and store.delivery(did).state is State.SENT


def test_find_deliveries_filters_without_the_table(store):
    a, b, c = [did for did, _ in store.add_deliveries([op("k-f1"), op("k-f2"), op("k-f3")])]
    store.set_delivery(b, action="customer", connection="qbd", created_at=time.time() + 3600)
    assert [r.id for r in store.find_deliveries(action="customer")] == [b]
    assert [r.id for r in store.find_deliveries(connections=["csv"], newest_first=True)] == [c, a]
    assert [r.id for r in store.find_deliveries(created_since=time.time() + 60)] == [b]
    assert [r.id for r in store.find_deliveries(ids=[a, c], state="pending", limit=1)] == [a]
    assert store.find_deliveries(event_id="evt_other") == [] and store.find_deliveries(ids=[]) == []


def test_release_gives_back_only_the_workers_own_claims(store):
    ids = [did for did, _ in store.add_deliveries([op("k-a"), op("k-b")])]
    store.claim("w1", limit=1)
    store.claim("w2", limit=1)
    due = time.time() + 30
    assert store.release("w1", ids, due) == 1
    mine, theirs = (store.find_deliveries(claimed_by=None, state="retrying"), store.find_deliveries(claimed_by="w2"))
    assert [r.next_attempt_at for r in mine] == [due] and mine[0].claimed_by is None and mine[0].attempts == 0
    assert [r.state for r in theirs] == [State.SENDING]


def test_a_replay_and_a_discard_are_the_only_ways_out_of_dead(store):
    a, b = [did for did, _ in store.add_deliveries([op("k-d1"), op("k-d2")])]
    force_state(store, a, "dead", attempts=6, max_attempts=6)
    force_state(store, b, "dead")
    assert store.claim("w1") == []                                  # dead is never claimed
    assert store.requeue(store.delivery(a), {"payload": '{"amount": 1}'}, budget=3) is True
    again = store.delivery(a)
    assert (again.state, again.max_attempts, again.payload) == (State.PENDING, 9, {"amount": 1})
    assert store.discard(b) is True and store.delivery(b).state is State.DISCARDED
    with pytest.raises(IllegalTransition, match="from discarded to pending"):
        store.requeue(store.delivery(b), {}, budget=3)


def _store_table_imports(path: Path) -> list[str]:
    """``file:line`` of each import of runner.store.tables (absolute or relative) in ``path``."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        if "runner.store.tables" in names:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_the_store_touches_its_tables():
    files = [p for top in ("runner", "connectors") for p in sorted((ROOT / top).rglob("*.py"))
             if not p.relative_to(ROOT).as_posix().startswith("runner/store/")]
    offenders = [hit for p in files for hit in _store_table_imports(p)]
    assert not offenders, ("these modules use the store's tables; move their SQL into a store method "
                           "(runner/store/):\n  " + "\n  ".join(offenders))


def test_the_import_scan_sees_relative_and_absolute_imports(tmp_path, monkeypatch):
    sample = ROOT / "runner" / "reconcile" / "_scan_sample.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
        "from ..store.tables import inbox\nfrom ..store import tables\nimport runner.store.tables\n"
        "from .store.tables import kv\n"))
    assert _store_table_imports(sample) == [f"runner/reconcile/_scan_sample.py:{n}" for n in (1, 2, 3)]


@pytest.mark.postgres
def test_a_transaction_left_open_by_a_stopped_process_does_not_hold_its_rows_forever(pg_url, monkeypatch):
    """Claims skip locked rows (SKIP LOCKED); a process stopped mid-transaction (SIGSTOP) would keep
    its rows locked, and so unclaimable, for as long as it stays stopped: PostgreSQL ends the session
    after IDLE_IN_TRANSACTION, and the rows are claimed. A transaction that plans while it holds rows
    asks for longer."""
    from sqlalchemy import select

    from runner.store import db
    monkeypatch.setattr(db, "IDLE_IN_TRANSACTION", 1.0)
    stalled, other = db.Store(pg_url), db.Store(pg_url)
    try:
        ids = [did for did, _ in stalled.add_deliveries([op(f"idle-{time.time()}-{n}") for n in range(3)])]
        frozen = stalled.engine.connect()
        frozen.begin()
        frozen.execute(select(deliveries.c.id).where(deliveries.c.id.in_(ids)).with_for_update()).all()
        assert other.claim("w-other", ids=ids) == []            # locked: skipped
        time.sleep(2.5)                                          # the stopped process never comes back
        assert sorted(r.id for r in other.claim("w-other", ids=ids)) == ids
        frozen.invalidate()
        with stalled.tx(idle_limit=600) as c:
            assert c.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "10min"
        with stalled.tx() as c:
            assert c.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "1s"
    finally:
        stalled.close()
        other.close()


@pytest.mark.postgres
def test_outcomes_whose_transaction_was_ended_by_the_server_are_recorded_once_on_a_new_connection(pg_url,
                                                                                                  monkeypatch):
    """A worker stopped while recording its answers (its transaction idle longer than
    IDLE_IN_TRANSACTION, so PostgreSQL ended the session) records them when it resumes: the
    rolled-back transaction is run again on a new connection, and each attempt counts once."""
    from runner.store import db
    monkeypatch.setattr(db, "IDLE_IN_TRANSACTION", 1.0)
    store = db.Store(pg_url)
    try:
        (did, _), = store.add_deliveries([op(f"resume-{time.time()}")])
        (row,) = store.claim("w-stalled", ids=[did])
        real, stalls = db._decided, []

        def stalled(*args):
            if not stalls:
                stalls.append(time.monotonic())
                time.sleep(2.5)           # SIGSTOP between the row lock and the update
            return real(*args)
        monkeypatch.setattr(db, "_decided", stalled)
        assert store.finish([{"id": did, "state": "sent", "target_ref": "doc_1"}], worker="w-stalled") == {did}
        after = store.delivery(did)
        assert (after.state, after.attempts, after.target_ref) == ("sent", 1, "doc_1")
        assert [a["outcome"] for a in store.attempts_of(did)] == ["sent"]
    finally:
        store.close()
