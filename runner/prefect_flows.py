"""The old entrypoint path (``runner/prefect_flows.py``), kept for Prefect deployments registered before
the runner was grouped by stage: it is ``runner.deliver.prefect_flows``."""

from runner.deliver.prefect_flows import *  # noqa: F401,F403
