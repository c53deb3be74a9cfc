"""The parts of ``verify.py``, pyrostore's own Jepsen-style verifier.

Running the store and its faults (what ``verify.py`` drives):

- :mod:`verifier.layouts`: the cluster files it runs (five hosts, each a part to cut off);
- :mod:`verifier.netns`: network-namespace hosts on one machine (`python -m verifier.netns`);
- :mod:`verifier.partition`: which links and nftables rules a partition needs (pure);
- :mod:`verifier.setns`: the driver's thread moved into a host's namespace;
- :mod:`verifier.deployment`: a store started from a cluster file, one launcher per host, its
  services killed, paused and restarted by role and id;
- :mod:`verifier.workload`: a client process that shops and writes its history;
- :mod:`verifier.clients`: the client processes, killed and replaced;
- :mod:`verifier.nemesis`: the faults, their schedule and their log;
- :mod:`verifier.run`: one run: shop under faults, heal, settle, replay, read, check;
- :mod:`verifier.availability`: the longest time without a success, per fault kind.

Judging what happened (pure: no network, no processes):

- :mod:`verifier.events`: one event, its JSON form, the JSON-lines history file;
- :mod:`verifier.history`: the recorder, and operations (invocations paired with their
  completions, replays merged) that the checkers read;
- :mod:`verifier.linearizability`: per item, Wing & Gong's search with Lowe's memoisation
  against a stock counter;
- :mod:`verifier.final`: the replicas' final state and a check's result;
- :mod:`verifier.checks`: the checks of the final state, and :func:`~verifier.checks.check_all`;
- :mod:`verifier.report`: the verdicts as a rich table, and the exit code they mean.
"""
