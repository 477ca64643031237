"""Connectors: one module or sub-package per external system.

A connector is a contract: the actions it offers, a JSON Schema per action's
payload (checked at ``validate`` time and again before anything is sent), and
``deliver`` for a batch of operations. Connectors do I/O only; planning,
state and retries belong to the runner.
"""
