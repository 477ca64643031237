"""Operate: ``ledgerflow serve`` (its server, listeners, background services), schedules and
deployments, the project's Prefect server, hot reload."""
