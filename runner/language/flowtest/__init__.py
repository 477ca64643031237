"""Flow tests: fixtures in, expected operations out (``ledgerflow test``).

A case names a flow, an input event and the operations the flow must
produce. Cases live in ``flows/tests/*.yaml`` or in a flow's own ``tests:``
section; each runs through the same pure planner as ``preview``, sends
nothing, and a failure names the mapping line behind every differing field.

Modules: ``model`` (cases and results), ``load`` (files -> cases, with
file:line:col problems), ``inputs`` (events and pinned look-ups),
``compare`` (exact or subset, money as decimals), ``execute`` (run a case),
``report`` (text), ``junit`` (JUnit XML), ``update`` (snapshot rewriting).
"""
