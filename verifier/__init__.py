"""The store's own Jepsen-style verifier: the pure parts (no network, no processes).

A runner drives clients and faults against a live store, records a history and reads every
replica's final state; these modules judge them:

- :mod:`verifier.events`: one event, its JSON form, the JSON-lines history file;
- :mod:`verifier.history`: the recorder, and operations (invocations paired with their
  completions, replays merged) that the checkers read;
- :mod:`verifier.linearizability`: per item, Wing & Gong's search with Lowe's memoisation
  against a stock counter;
- :mod:`verifier.final`: the replicas' final state and a check's result;
- :mod:`verifier.checks`: the checks of the final state, and :func:`~verifier.checks.check_all`;
- :mod:`verifier.report`: the verdicts as a rich table, and the exit code they mean.
"""
