"""Faults under way, end to end (#13 "Done when"): real ``ledgerflow worker`` and
``ledgerflow serve`` processes on PostgreSQL, a real Prefect API, and an HTTP
target stand-in (tests/standins/flaky_target.py) whose own record (documents and
requests by Idempotency-Key) is checked beside the store afterwards.

Already covered elsewhere, and not repeated here: a worker killed and then
restarted alone (tests/test_worker.py), a Prefect API down before a worker
starts (tests/test_worker.py), serve killed by SIGKILL under load keeping every
acknowledged event (tests/test_webhooks_crash.py). Here:

* a worker killed mid-batch while a second worker is running beside it;
* a worker stalled (SIGSTOP) past its lease while another runs, then resumed;
* the Prefect API answering 503 while a worker is in the middle of a batch;
* ``serve`` (with its dispatcher and delivery loop) stopped by SIGTERM and
  started again while a sender posts signed webhooks and retries as Stripe does.

Each checks that nothing is lost, nothing is booked twice, nothing is dead-lettered,
and every attempt the store counts really reached the target.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.delivery_helpers import charge, http_project, load_app, plan_charges
from tests.standins.flaky_target import FlakyTarget
from tests.support.servers import free_port, serve_app, start_serve
from tests.test_worker import _clean, _stop
from tests.webhook_helpers import SECRETS, signed

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WAIT = 240.0          # seconds: a loaded 2-core machine starts Python and Prefect clients slowly


# ---- processes ------------------------------------------------------------------------------

def _env(project: Path, store_url: str, api: str | None = None) -> dict[str, str]:
    from prefect.settings import get_current_settings
    return {**os.environ, **SECRETS, "LEDGERFLOW_PROJECT": str(project), "LEDGERFLOW_STORE_URL": store_url,
            "PREFECT_API_URL": api or str(get_current_settings().api.url), "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_CLIENT_MAX_RETRIES": "0"}     # an outage reaches the worker itself, not Prefect's retries


def _worker(project: Path, store_url: str, log: Path, *extra: str, api: str | None = None) -> subprocess.Popen:
    """``ledgerflow worker`` (delivery only), its output in ``log`` (a pipe nobody reads would block it)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "runner.cli", "worker", "--poll", "0.2", "--no-dispatch",
                                 *extra], cwd=str(ROOT), env=_env(project, store_url, api),
                                stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _wait(cond, what: str, procs=(), timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.args[3]} {p.pid} exited early ({p.returncode}) while waiting for "
                                     f"{what}:\n{p.log.read_text(errors='replace')[-4000:]}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.pid}\n{p.log.read_text(errors='replace')[-3000:]}" for p in procs)
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.05)


def _lane_prefix(proc: subprocess.Popen) -> str:
    """The worker ids a process claims under: ``host:pid/lane-N``."""
    return f"{socket.gethostname()}:{proc.pid}/"


# ---- the store's record --------------------------------------------------------------------

def _project(tmp_path: Path, target_url: str, store_url: str, monkeypatch, *, retry_first_delay: str = "10s"):
    """The charges-to-ledger project on a clean PostgreSQL store, with a target timeout longer than
    any scripted hang (a hang is the target's, never the client's)."""
    _clean(store_url)
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", store_url)
    project = http_project(tmp_path / "p", target_url)
    project.write_text(project.read_text().replace("timeout: 0.5", "timeout: 300"))
    flow = project.parent / "flows" / "charges-to-ledger.yaml"
    flow.write_text(flow.read_text().replace("first_delay: 10s, max_delay: 40s",
                                             f"first_delay: {retry_first_delay}, max_delay: 10m"))
    return project, load_app(project)


def _planned(app, n: int) -> tuple[list[int], list[str]]:
    ids = plan_charges(app, n)
    return ids, [app.store.delivery(i)["idempotency_key"] for i in ids]


def _by_worker(app, did: int) -> list[tuple[str, str]]:
    return [(a["outcome"], a["worker"] or "") for a in app.store.attempts_of(did)]


def _sent_by(app, prefix: str) -> int:
    from sqlalchemy import func, select

    from runner.store.tables import attempts
    with app.store.engine.connect() as c:
        return c.execute(select(func.count()).select_from(attempts).where(
            attempts.c.outcome == "sent", attempts.c.worker.startswith(prefix))).scalar_one()


def _assert_booked_once(target: FlakyTarget, keys: list[str]) -> None:
    """The target's own record: one document per planned operation, and no key answered 'created' twice."""
    assert sorted(target.docs) == sorted(keys)
    assert len({doc["id"] for doc in target.docs.values()}) == len(keys)
    created = Counter(k for k, status in target.requests if status == 201)
    assert set(created) <= set(keys) and set(created.values()) <= {1}


def _assert_all_sent_honestly(app, target: FlakyTarget, ids: list[int]) -> None:
    """Every row sent, none dead, none held; the attempts counter is the number of attempts logged
    as made (a takeover's 'lost' marker counts nothing) and never more than reached the target."""
    assert app.store.count_deliveries("dead") == 0
    for did in ids:
        row = app.store.delivery(did)
        log = app.store.attempts_of(did)
        made = [a for a in log if a["outcome"] != "lost"]
        assert row["state"] == "sent" and row["claimed_by"] is None, (did, row["state"], log)
        assert row["target_ref"] == target.docs[row["idempotency_key"]]["id"]
        assert row["attempts"] == len(made) <= target.posts_by_key[row["idempotency_key"]], (did, log)
        assert all(a["attempt"] == 0 for a in log if a["outcome"] == "lost")
        assert "dead" not in {a["outcome"] for a in log}


# ---- 1. a worker killed mid-batch, a second one running -------------------------------------

@pytest.mark.postgres
@pytest.mark.prefect
def test_a_worker_killed_mid_batch_beside_another_loses_nothing_and_counts_no_attempt_never_made(
        prefect_api, pg_url, tmp_path, monkeypatch):
    target = FlakyTarget(hang=180.0)
    with serve_app(target.app) as srv:
        project, app = _project(tmp_path, srv.url, pg_url, monkeypatch)
        ids, keys = _planned(app, 60)
        for k in keys[:4]:          # the first batch's first four requests sit at the target: they fill the
            target.fail(k, "slow")  # connection's four request slots, so the rest of the batch waits unsent
        opts = ("--batch-size", "8", "--max-batch-size", "8", "--lease", "3")
        first = _worker(project, pg_url, tmp_path / "first.log", *opts)
        procs = [first]
        try:
            _wait(lambda: all(k in target.docs for k in keys[:4]), "the first batch to be in flight", procs)
            second = _worker(project, pg_url, tmp_path / "second.log", *opts)
            procs.append(second)
            _wait(lambda: _sent_by(app, _lane_prefix(second)) > 0, "the second worker to deliver", procs)
            first.send_signal(signal.SIGKILL)
            first.wait(30)
            posted_by_first = dict(target.posts_by_key)
            procs.remove(first)
            _wait(lambda: app.store.count_deliveries("sent") == len(ids), "every delivery to be sent", procs)
        finally:
            _stop([first, *procs])
        assert first.returncode == -signal.SIGKILL
        _assert_booked_once(target, keys)
        _assert_all_sent_honestly(app, target, ids)
        taken = [i for i in ids if any(o == "lost" and w.startswith(_lane_prefix(second))
                                       for o, w in _by_worker(app, i))]
        assert set(ids[:8]) <= set(taken)          # the batch in hand was taken over by the survivor
        for did in ids:
            row, log = app.store.delivery(did), _by_worker(app, did)
            key = row["idempotency_key"]
            if did in taken:                       # not counted for the dead worker; sent by the survivor
                assert [o for o, _ in log] == ["lost", "sent"] and log[1][1].startswith(_lane_prefix(second))
                assert row["attempts"] == 1
                assert target.posts_by_key[key] == posted_by_first.get(key, 0) + 1
            else:
                assert [o for o, _ in log] == ["sent"] and row["attempts"] == 1 == target.posts_by_key[key]
        in_flight = [i for i in taken if posted_by_first.get(app.store.delivery(i)["idempotency_key"])]
        never_sent = [i for i in taken if i not in in_flight]
        assert set(ids[:4]) <= set(in_flight) and set(ids[4:8]) <= set(never_sent)
    app.close()


# ---- 2. a worker stalled past its lease, then resumed ---------------------------------------

@pytest.mark.postgres
@pytest.mark.prefect
def test_a_stalled_worker_s_late_answers_are_recorded_and_a_late_success_wins(prefect_api, pg_url, tmp_path,
                                                                              monkeypatch):
    """SIGSTOP for longer than the lease: the other worker takes the batch over (one of its requests
    answers 503, so that row waits to be retried); SIGCONT: the stalled worker's answers arrive,
    each is recorded and counted, and its success on the 503 row is the row's outcome."""
    target = FlakyTarget(hang=10.0)
    with serve_app(target.app) as srv:
        project, app = _project(tmp_path, srv.url, pg_url, monkeypatch, retry_first_delay="10m")
        ids, keys = _planned(app, 24)
        late = keys[0]
        target.fail(late, "slow", "503")     # the stalled worker's request is answered late; the other's, 503
        stalled = _worker(project, pg_url, tmp_path / "stalled.log", "--batch-size", "8", "--max-batch-size", "8",
                          "--lease", "3")
        procs = [stalled]
        try:
            _wait(lambda: late in target.docs, "the batch to be in flight", procs)
            stalled.send_signal(signal.SIGSTOP)
            other = _worker(project, pg_url, tmp_path / "other.log", "--batch-size", "8", "--lease", "30")
            procs.append(other)
            _wait(lambda: app.store.delivery(ids[0])["state"] == "retrying"
                  and app.store.count_deliveries("sent") == len(ids) - 1, "the other worker to take over", [other])
            taken = [i for i in ids if "lost" in {o for o, _ in _by_worker(app, i)}]
            assert ids[0] in taken
            stalled.send_signal(signal.SIGCONT)
            _wait(lambda: app.store.delivery(ids[0])["state"] == "sent", "the stalled worker's late success", procs)
        finally:
            if stalled.poll() is None:
                stalled.send_signal(signal.SIGCONT)
            _stop(procs)            # SIGTERM: each finishes the batch in hand, so every answer is in
        _assert_booked_once(target, keys)
        _assert_all_sent_honestly(app, target, ids)
        mine, theirs = _lane_prefix(stalled), _lane_prefix(other)
        first = app.store.delivery(ids[0])
        assert [(o, w[:len(mine)] if w.startswith(mine) else w[:len(theirs)]) for o, w in _by_worker(app, ids[0])] \
            == [("lost", theirs), ("retry", theirs), ("sent", mine)]
        assert first["attempts"] == 2 == target.posts_by_key[late] and first["last_error"] is None
        for did in ids:                     # every answer that came back is recorded and counted
            row = app.store.delivery(did)
            made = [a for a in _by_worker(app, did) if a[0] != "lost"]
            assert row["attempts"] == len(made) == target.posts_by_key[row["idempotency_key"]], (did, made)
        late_answers = [i for i in taken if any(o == "sent" and w.startswith(mine) for o, w in _by_worker(app, i))]
        assert ids[0] in late_answers and len(late_answers) > 1      # not only the row whose success won
        assert "another worker took it over" in stalled.log.read_text()
    app.close()


# ---- 3. the Prefect API fails while a worker is delivering ------------------------------------

@pytest.mark.postgres
@pytest.mark.prefect
def test_a_prefect_api_outage_in_the_middle_of_a_batch_loses_nothing_and_delivery_resumes(
        prefect_api, pg_url, tmp_path, monkeypatch):
    from prefect.settings import get_current_settings

    from tests.support.prefect_outage import OutageProxy
    target = FlakyTarget(hang=6.0)
    proxy = OutageProxy(str(get_current_settings().api.url), down=False)
    with serve_app(target.app) as srv, serve_app(proxy) as api:
        project, app = _project(tmp_path, srv.url, pg_url, monkeypatch)
        ids, keys = _planned(app, 150)
        target.fail(keys[40], "slow")         # a batch is at the target when the API goes down
        worker = _worker(project, pg_url, tmp_path / "worker.log", "--batch-size", "10", "--max-batch-size", "10",
                         api=api.url + "/api")
        try:
            _wait(lambda: keys[40] in target.docs, "a batch to be in flight", [worker])
            proxy.down.set()
            refused = proxy.refused
            _wait(lambda: proxy.refused >= refused + 4, "the worker to keep trying the API", [worker])
            time.sleep(3)
            during = app.store.count_deliveries("sent")
            assert during < len(ids)          # the outage held delivery up...
            proxy.down.clear()
            _wait(lambda: app.store.count_deliveries("sent") == len(ids), "delivery to resume", [worker])
        finally:
            _stop([worker])
        _assert_booked_once(target, keys)
        _assert_all_sent_honestly(app, target, ids)
        for did in ids:                       # ...and nothing went twice: a failed batch gave its claims back
            assert [o for o, _ in _by_worker(app, did)] == ["sent"]
        assert set(target.posts_by_key.values()) == {1}
        log = worker.log.read_text()
        assert "503" in log and "released at once, retrying in" in log
    app.close()


# ---- 4. serve restarted under load -------------------------------------------------------------

ENDPOINT = """\
stripe:
  endpoints:
    platform:
      path: /webhooks/stripe
      secrets: [{env: LF_TEST_WHSEC_NEW}]
"""


class StripeLikeSender:
    """Posts signed events, each until it gets a 2xx, retrying a refusal, a timeout or any
    other answer with backoff (as Stripe retries an endpoint), from a few threads at a steady pace.
    The first ``hold_after`` go at once; the rest wait for ``release()`` (so the load is still
    coming when the test restarts serve)."""

    def __init__(self, url: str, events: list[dict], *, hold_after: int, threads: int = 3, pace: float = 0.1):
        self.url, self.pace = url, pace
        self.todo = list(reversed(events))
        self.acked: list[str] = []
        self.failures: Counter = Counter()
        self._allowed = hold_after
        self._taken = 0
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self) -> StripeLikeSender:
        for t in self._threads:
            t.start()
        return self

    def release(self) -> None:
        with self._cond:
            self._allowed = len(self.todo) + self._taken
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    def _next(self) -> dict | None:
        with self._cond:
            self._cond.wait_for(lambda: not self.todo or self._taken < self._allowed)
            if not self.todo:
                return None
            self._taken += 1
            return self.todo.pop()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while (ev := self._next()) is not None:
                self._deliver(client, ev)
                time.sleep(self.pace)

    def _deliver(self, client: httpx.Client, ev: dict) -> None:
        wait = 0.1
        while True:
            body, headers = signed(ev)       # signed afresh at each try, as Stripe does
            try:
                status = client.post(self.url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if isinstance(status, int) and 200 <= status < 300:
                with self._cond:
                    self.acked.append(ev["id"])
                return
            with self._cond:
                self.failures[status] += 1
            time.sleep(wait)
            wait = min(wait * 2, 2.0)


@pytest.mark.postgres
@pytest.mark.prefect
def test_serve_restarted_under_load_takes_every_event_once_and_delivers_it(prefect_api, pg_url, tmp_path,
                                                                           monkeypatch):
    target = FlakyTarget()
    with serve_app(target.app) as srv:
        project, app = _project(tmp_path, srv.url, pg_url, monkeypatch)
        project.write_text(project.read_text() + ENDPOINT)
        events = [charge(n)[0] for n in range(200)]
        port = free_port()
        env = _env(project, pg_url)

        def serve(name: str) -> subprocess.Popen:      # with its services: dispatcher and delivery loop
            proc = start_serve(port, env, log=tmp_path / name, args=())
            proc.log = tmp_path / name
            return proc

        first = serve("serve-1.log")
        sender = StripeLikeSender(f"http://127.0.0.1:{port}/webhooks/stripe", events, hold_after=80).start()
        try:
            _wait(lambda: len(sender.acked) >= 60 and app.store.count_deliveries("sent") > 0,
                  "events taken and delivered before the restart", [first])
            sender.release()
            first.send_signal(signal.SIGTERM)
            first.wait(WAIT)
            at_stop = len(sender.acked)
            second = serve("serve-2.log")
            sender.join(WAIT)
            assert not sender.todo and len(sender.acked) == len(events)
            _wait(lambda: app.store.count_deliveries("sent") == len(events), "every event delivered", [second])
        finally:
            _stop([first, *([second] if "second" in locals() else [])])
        # uvicorn ends by raising the SIGTERM it caught once it has shut down
        assert first.returncode in (0, -signal.SIGTERM), first.log.read_text()[-3000:]
        assert at_stop < len(events) and sum(sender.failures.values()) > 0, sender.failures   # under load
        ids = [e["id"] for e in events]
        assert app.store.count_events() == len(events) and app.store.event_ids(ids) == set(ids)
        assert app.store.count_events("dispatched") == len(events)
        rows = app.store.deliveries_where()
        assert len(rows) == len(events)
        assert sorted(d["body"]["charge"] for d in target.docs.values()) == sorted(
            e["data"]["object"]["id"] for e in events)
        _assert_booked_once(target, [r["idempotency_key"] for r in rows])
        _assert_all_sent_honestly(app, target, [r["id"] for r in rows])
        assert all("lost" not in {o for o, _ in _by_worker(app, r["id"])} for r in rows)   # none left held
    app.close()
