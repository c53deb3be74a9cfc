"""The parts of ``bench.py``: client processes, store handling, experiments, tables and plots.

Modules, in the order bench.py uses them: :mod:`figures` (latency summaries), :mod:`pool`
(client processes), :mod:`stores` (starting a store, its services' ``stats()``), the
experiments :mod:`latency` (tiers, invalidation, baseline), :mod:`crash`, :mod:`scale`,
:mod:`failover` and :mod:`rejoin` (with :mod:`shopper`, a client process that buys without
pause), then :mod:`report` (rich tables) and :mod:`plots` (PNG charts: the one module that
imports matplotlib, and only when ``--plot`` asks for charts).
"""
