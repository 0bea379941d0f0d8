"""durable_ext's fault suite (issue 15 items 13 and 14): ``python -m chaos [--quick] [--kills N] ...``.

One Azurite on disk, several ``python -m durable_ext start`` workers on one hub, a mixed load of
chains, fan-outs, sub-orchestrations, timers, external events and entity calls started over the
management API, while workers are SIGKILLed (and restarted) at random and storage goes away once.
Afterwards every instance must have completed with its expected output, no history event may be
duplicated, the counter entities must be exact, the queues empty, and every partition leased by one
live worker; the recovery time after each kill is measured against the lease expiry plus 10 s.
``python -m chaos --drain`` runs the drain scenario instead (issue 20): rolling SIGTERM restarts of
every worker in turn, each drain checked for a clean exit and released leases, and every activity of
the ``ledger`` instances for having run exactly once.

Modules: ``__main__`` (command line), ``driver`` (one run), ``cluster`` (Azurite-backed workers),
``api`` (the management API with fail-over), ``workload`` (instances and their expected outputs),
``checks`` (the invariants), ``recovery`` (recovery times), ``drain`` (the drain scenario's restarts and
checks), ``report``; ``app/`` is the function app.
"""
