"""Connectors: one module or sub-package per external system.

A connector is a contract (connectors/CONTRACT.md): a ``ConnectorSpec`` registered
under the ``ledgerflow.connectors`` entry points declares the connection's schema,
the actions it offers with a JSON Schema per payload (checked at ``validate`` time
and again before anything is sent), its capabilities and what it needs; its class
``deliver``s a batch of operations. Connectors do I/O only; planning, state and
retries belong to the runner.
"""
