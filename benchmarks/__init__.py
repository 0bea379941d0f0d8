"""durable_ext's benchmark suite (issue 8): ``python -m benchmarks [scenario ...] [--json F] [--quick]``.

Each scenario runs on its own fresh in-memory Azurite with the engine in this process; see
``benchmarks/RESULTS.md`` for the latest figures and ``python -m benchmarks --help`` for the options.

Modules: ``__main__`` (command line and report), ``harness`` (Azurite, hub, engine, client per
scenario), ``scenarios`` (the workloads), ``probe`` (the raw storage ceiling), ``counting`` (the
engine's storage request counter), ``dbos_twin`` (the same shapes on DBOS Transact + SQLite, run in
a subprocess), ``stats``; ``app/function_app.py`` holds the orchestrations and activities.
"""

MANY_STEPS = 5
"""Activities per orchestration in the ``many`` scenario and in its DBOS twin."""
