"""runner.store.limiter: a store-backed limiter shared by worker processes."""

from __future__ import annotations

import multiprocessing

import pytest

from runner.store import open_store
from runner.store.limiter import Limit, RateLimiter, RateLimitTimeout


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def limiter(store_url, clock=None) -> RateLimiter:
    clock = clock or Clock()
    return RateLimiter(open_store(store_url), clock=clock, sleep=clock.sleep)


def test_rate_per_sliding_window(store_url):
    clock = Clock()
    rl = limiter(store_url, clock)
    lim = [Limit("qbo:1", rate=3, per=60)]
    for _ in range(3):
        assert rl.try_acquire(lim)[0] is not None
        clock.t += 10
    ids, wait = rl.try_acquire(lim)
    assert ids is None and wait == pytest.approx(30)       # the first one leaves the window at +60
    clock.t += 30
    assert rl.try_acquire(lim)[0] is not None
    assert rl.try_acquire([Limit("qbo:2", rate=3)])[0] is not None   # keys are independent


def test_concurrency_places_free_on_release_or_lease_expiry(store_url):
    clock = Clock()
    rl = limiter(store_url, clock)
    lim = [Limit("k", concurrency=2, lease=100)]
    a, _ = rl.try_acquire(lim)
    b, _ = rl.try_acquire(lim)
    assert rl.try_acquire(lim)[0] is None
    rl.release(a)
    c, _ = rl.try_acquire(lim)
    assert c is not None and rl.try_acquire(lim)[0] is None
    clock.t += 101                                          # a dead worker's slot expires
    assert rl.try_acquire(lim)[0] is not None


def test_several_limits_are_all_or_nothing(store_url):
    rl = limiter(store_url)
    batch = Limit("qbo:1:batch", rate=1)
    calls = Limit("qbo:1", rate=10)
    assert rl.try_acquire([calls, batch])[0] is not None
    assert rl.try_acquire([calls, batch])[0] is None        # batch limit full ...
    for _ in range(9):                                      # ... and it took nothing from the call limit
        assert rl.try_acquire([calls])[0] is not None
    assert rl.try_acquire([calls])[0] is None


def test_block_after_429_and_acquire_waits(store_url):
    clock = Clock()
    rl = limiter(store_url, clock)
    rl.block("qbo:1", clock.t + 45)
    ids, wait = rl.try_acquire([Limit("qbo:1", rate=500)])
    assert ids is None and wait == pytest.approx(45)
    with pytest.raises(RateLimitTimeout, match="qbo:1"):
        rl.acquire([Limit("qbo:1", rate=500)], max_wait=10)
    start = clock.t
    with rl.slot([Limit("qbo:1", rate=500)]):
        assert clock.t - start == pytest.approx(45)


def _grab(url: str, n: int, q) -> None:
    rl = RateLimiter(open_store(url))
    got = 0
    for _ in range(n):
        ids, _ = rl.try_acquire([Limit("shared", rate=25, per=3600)])
        got += ids is not None
    q.put(got)


def test_processes_share_the_limit(store_url):
    open_store(store_url)        # tables exist before the workers start
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(store_url, 20, q)) for _ in range(3)]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert total == 25


def test_a_request_counts_from_its_end(store_url):
    # the target counts a request when it arrives, which can be later than our start
    clock = Clock()
    rl = limiter(store_url, clock)
    lim = [Limit("k", rate=1, per=60)]
    ids, _ = rl.try_acquire(lim)
    clock.t += 5
    rl.release(ids)
    clock.t += 56                               # 61 s after the start, 56 after the end
    ids, wait = rl.try_acquire(lim)
    assert ids is None and wait == pytest.approx(4)
