"""durable_ext: Durable Functions for Python on an Azure Storage task hub, without the .NET host."""
