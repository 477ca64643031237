"""Deliver: claimed rows to their targets in Prefect flow runs, retries, the dead-letter queue,
alerts, the event timeline, ``ledgerflow run``."""
