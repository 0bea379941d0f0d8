"""What a running worker tells about itself and its task hub: Prometheus metrics (:mod:`.metrics`), the
hub's queue backlog as storage reports it (:mod:`.queues`) and the scale hint computed from it
(:mod:`.scale`). The host serves them at ``/metrics`` and ``/scale`` (``durable_ext.host.metrics``)."""
