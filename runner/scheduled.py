"""The old entrypoint path (``runner/scheduled.py``), kept for Prefect deployments registered before
the runner was grouped by stage: it is ``runner.operate.scheduled``."""

from runner.operate.scheduled import *  # noqa: F401,F403
