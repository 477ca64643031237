"""A target's API limits hold across workers: Prefect global concurrency limits named after the connection."""

from __future__ import annotations

import asyncio
import threading

import pytest

from runner.deliver.limits import ensure_limits
from runner.deliver.worker import DeliveryLoop, LoopSettings
from tests.delivery_helpers import http_project, load_app, plan_charges
from tests.support.servers import serve_app

pytestmark = pytest.mark.prefect


class CountingTarget:
    """Answers 201 after 300 ms and records the most requests it ever had in flight."""

    def __init__(self):
        self.in_flight = 0
        self.max_in_flight = 0
        self.created = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.3)
        self.in_flight -= 1
        self.created += 1
        body = b'{"id": "doc_%d"}' % self.created
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("max_in_flight", [1, None])
def test_max_in_flight_holds_across_two_workers(prefect_api, tmp_path, monkeypatch, max_in_flight):
    target = CountingTarget()
    with serve_app(target) as srv:
        monkeypatch.setenv("LEDGERFLOW_STORE_URL", f"sqlite:///{tmp_path / 's.db'}")
        pf = http_project(tmp_path / "p", srv.url)
        limit = f"\n    max_in_flight: {max_in_flight}" if max_in_flight else ""
        pf.write_text(pf.read_text().replace("    concurrency: 4", f"    concurrency: 1\n    batch_size: 2{limit}")
                      .replace("ledger_api:", f"ledger_api_{max_in_flight or 'free'}:")
                      .replace("timeout: 0.5", "timeout: 10"))
        flow_file = tmp_path / "p" / "flows" / "charges-to-ledger.yaml"
        flow_file.write_text(flow_file.read_text().replace("target: ledger_api", f"target: ledger_api_{max_in_flight or 'free'}"))
        app = load_app(pf)
        ids = plan_charges(app, 16)
        ensure_limits(app)
        ensure_limits(app)                         # idempotent: a restart re-applies the same limits
        loops = [DeliveryLoop(app, LoopSettings(batch_size=2, concurrency=2), worker=w)
                 for w in ("worker-a", "worker-b")]
        threads = [threading.Thread(target=lp.run, kwargs={"until_idle": True}) for lp in loops]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert all(app.store.delivery(i)["state"] == "sent" for i in ids) and target.created == 16
    if max_in_flight:
        assert target.max_in_flight == 1
    else:
        assert target.max_in_flight > 1          # without the limit the four lanes overlap
    app.close()
