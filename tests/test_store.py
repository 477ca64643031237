"""The store on SQLite and PostgreSQL: inbox de-duplication, delivery rows before side effects, leases."""

from __future__ import annotations

import threading
import time

from runner.language.planner import Operation


def op(key: str, conn: str = "csv") -> Operation:
    return Operation(flow="f", route="r", connection=conn, connector_type="csv", action="row",
                     idempotency_key=key, payload={"a": 1}, event_id="evt_1")


def test_inbox_deduplicates_by_event_id(store):
    ev = {"id": "evt_1", "type": "charge.succeeded", "created": 1, "account": "acct_9"}
    assert store.add_events([(ev, "{}", "webhook"), (ev, "{}", "webhook")]) == [True, False]
    assert store.add_event(ev, "{}", "catch-up") is False
    row = store.get_event("evt_1")
    assert row["account"] == "acct_9" and row["status"] == "pending" and row["source"] == "webhook"
    assert store.count_events() == 1


def test_concurrent_inserts_of_one_event_make_one_row(store):
    ev = {"id": "evt_race", "type": "x"}
    results = []
    barrier = threading.Barrier(8)

    def insert():
        barrier.wait()
        results.append(store.add_event(ev, "{}", "webhook"))

    threads = [threading.Thread(target=insert) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert store.count_events() == 1


def test_delivery_rows_are_unique_by_idempotency_key(store):
    (d1, new1), = store.add_deliveries([op("k1")])
    (d2, new2), = store.add_deliveries([op("k1")])
    assert new1 and not new2 and d1 == d2
    assert store.count_deliveries() == 1


def test_claim_leases_and_expired_leases_are_released(store):
    store.add_deliveries([op(f"k{i}") for i in range(5)])
    a = store.claim("worker-a", limit=3, lease=60)
    b = store.claim("worker-b", limit=10, lease=60)
    assert len(a) == 3 and len(b) == 2
    assert not {r["id"] for r in a} & {r["id"] for r in b}
    assert store.claim("worker-c", limit=10) == []
    # worker-a dies; after its lease, its rows are claimable again
    later = store.claim("worker-c", limit=10, now=time.time() + 61)
    assert sorted(r["id"] for r in later) == sorted(r["id"] for r in a + b)
    # the dead workers' attempts may have reached the target: connectors see one attempt made, so they
    # look before resending; the store counts only attempts that answered (a late answer counts then)
    assert all(r["attempts"] == 1 and "lease expired" in r["last_error"] for r in later)
    assert all(store.delivery(r["id"])["attempts"] == 0 for r in later)
    assert [x["outcome"] for x in store.attempts_of(later[0]["id"])] == ["lost"]


def test_finish_a_stale_workers_failure_is_counted_but_the_holder_decides(store):
    (did, _), = store.add_deliveries([op("k")])
    t = time.time()
    assert store.claim("w1", lease=1, now=t)
    (row,) = store.claim("w2", now=t + 2)                 # w1's lease lapsed: taken over
    assert store.finish([{"id": did, "state": "dead", "error": "HTTP 400"}], worker="w1") == set()
    assert store.delivery(did)["state"] == "sending" and store.delivery(did)["claimed_by"] == "w2"
    assert store.finish([{"id": did, "state": "sent", "target_ref": "T2"}], worker="w2") == {did}
    d = store.delivery(did)
    assert d["state"] == "sent" and d["target_ref"] == "T2" and d["attempts"] == 2
    assert [a["outcome"] for a in store.attempts_of(did)] == ["lost", "dead", "sent"]


def test_throttled_attempts_do_not_count(store):
    (did, _), = store.add_deliveries([op("k")])
    store.claim("w")
    store.finish([{"id": did, "state": "retrying", "error": "429", "counted": False,
                   "next_attempt_at": time.time() + 30}], worker="w")
    d = store.delivery(did)
    assert d["attempts"] == 0 and d["state"] == "retrying"
    assert store.claim("w") == []                           # not due yet
    assert len(store.claim("w", now=time.time() + 31)) == 1
