"""The blueprint every orchestrator in this package registers itself on."""

import azure.durable_functions as df

bp = df.Blueprint()
