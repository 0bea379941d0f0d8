"""The declared public API: every exported name exists and is documented, and embedding works as the
package docstring shows."""

from __future__ import annotations

import dataclasses
import inspect
import json
import uuid
import warnings
from pathlib import Path

import durable_ext
from durable_ext import (
    Engine,
    OrchestrationStatus,
    StorageAccount,
    TaskHub,
    TaskHubClient,
    load_app,
    load_config,
)

SAMPLE_APP = Path(__file__).resolve().parent.parent


def test_every_exported_name_exists_and_is_documented() -> None:
    assert sorted(durable_ext.__all__) == durable_ext.__all__
    for name in durable_ext.__all__:
        exported = getattr(durable_ext, name)
        assert (inspect.getdoc(exported) or "").strip(), f"{name} has no docstring"


def test_errors_form_one_hierarchy() -> None:
    errors = [getattr(durable_ext, n) for n in durable_ext.__all__ if n.endswith("Error")]
    assert errors and all(issubclass(e, durable_ext.DurableExtError) for e in errors)


async def test_embedding_as_the_package_docstring_shows(azurite_connection_string: str) -> None:
    config = load_config(SAMPLE_APP, environ={})
    hub_name = "Embed" + uuid.uuid4().hex[:8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        registry = load_app(SAMPLE_APP)
    account = StorageAccount.from_connection_string(azurite_connection_string)
    async with TaskHub(account, hub_name) as hub:
        await hub.create()
        try:
            options = dataclasses.replace(config.durable_task, hub_name=hub_name)
            async with Engine(hub, registry, options) as engine:
                client = TaskHubClient(hub, handoff=engine)
                instance_id = await client.start_new("hello_sequence")
                state = await client.wait_for_completion(instance_id, timeout=60)
        finally:
            await hub.delete()
    assert state.runtime_status is OrchestrationStatus.Completed
    assert json.loads(state.output or "null") == ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
