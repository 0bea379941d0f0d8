"""The worker side of durable_ext: partition ownership, orchestration and activity dispatch."""
