"""Prefect servers ledgerflow starts do not send telemetry (issue #13, item 12)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def _setting(env: dict) -> str:
    code = ("import runner; from prefect.settings import get_current_settings; "
            "print(get_current_settings().server.analytics_enabled)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_prefect_analytics_are_off_for_every_server_ledgerflow_starts():
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    assert _setting(env) == "False"


def test_a_users_own_setting_wins():
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    assert _setting(env) == "True"
