"""`ledgerflow inbox list` tells each event's story at a glance; `inbox show | head` is not an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from runner.cli import main
from runner.fixtures import event_from_fixture
from tests.conftest import ROOT


def test_inbox_list_has_a_header_received_time_status_and_the_error(project_dir, stripe_fixtures, capsys,
                                                                      monkeypatch, tmp_path):
    monkeypatch.setenv("LEDGERFLOW_STORE_URL", f"sqlite:///{tmp_path / 'inbox.db'}")
    from runner.app import App
    app = App()
    ok = event_from_fixture("charge.succeeded")
    bad = event_from_fixture("charge.succeeded", overrides={"id": "ch_bad"})
    bad["id"] = "evt_bad"
    app.store.add_event(ok, json.dumps(ok), "cli")
    app.store.add_event(bad, json.dumps(bad), "cli")
    app.store.mark_event("evt_bad", "failed", flows="f",
                         error="flows/f.yaml:3:5: routes[0].when: undefined 'x'\nsecond line")
    assert main(["inbox", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["event", "type", "account", "received (UTC)", "status", "flows", "error"]
    failed = next(line.split("\t") for line in lines if line.startswith("evt_bad"))
    assert failed[4] == "failed" and failed[6] == "flows/f.yaml:3:5: routes[0].when: undefined 'x'"
    assert len(failed[3]) == 19 and failed[3][4] == "-"                 # YYYY-MM-DD HH:MM:SS
    assert main(["inbox", "list", "--status", "failed"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()[1:]] == ["evt_bad"]


def test_inbox_show_piped_into_head_ends_quietly(project_dir, stripe_fixtures, tmp_path):
    env = dict(os.environ, LEDGERFLOW_PROJECT=str(project_dir / "ledgerflow.yaml"),
               LEDGERFLOW_STORE_URL=f"sqlite:///{tmp_path / 'pipe.db'}")
    ev = event_from_fixture("charge.succeeded")
    ev["data"]["object"]["description"] = "x" * 200_000           # more than a pipe's buffer
    code = ("import json, sys; from runner.app import App; ev = json.loads(sys.stdin.read()); "
            "App().store.add_event(ev, json.dumps(ev), 'cli')")
    subprocess.run([sys.executable, "-c", code], input=json.dumps(ev), text=True, cwd=ROOT, env=env, check=True)
    show = subprocess.Popen([sys.executable, "-m", "runner.cli", "inbox", "show", ev["id"]], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = show.stdout.read(10)                 # `| head -c 10`: read a little, then leave
    show.stdout.close()
    err = show.stderr.read().decode()
    assert show.wait(120) == 0 and first and "BrokenPipeError" not in err and "Traceback" not in err
