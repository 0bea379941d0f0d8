"""durable_ext: Durable Functions for Python on an Azure Storage task hub, without the .NET host.

The names below are the supported API for embedding the engine (running a worker or a host from
your own code, starting and querying instances from a script). Everything else in the package is
internal and may change between releases; ``python -m durable_ext`` is the command line.

Embedding in a few lines::

    from durable_ext import Engine, StorageAccount, TaskHub, TaskHubClient, load_app, load_config

    config = load_config(app_dir)
    async with TaskHub(StorageAccount.from_connection_string(conn), config.durable_task.hub_name) as hub:
        await hub.create()
        async with Engine(hub, load_app(app_dir), config.durable_task) as engine:
            client = TaskHubClient(hub, handoff=engine)
            instance_id = await client.start_new("hello_sequence")
            state = await client.wait_for_completion(instance_id, timeout=60)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durable_ext.app_loader import FunctionRegistry, load_app
    from durable_ext.client import (
        EntityQueryResult,
        EntitySnapshot,
        InstanceQueryResult,
        OrchestrationState,
        TaskHubClient,
    )
    from durable_ext.config import (
        DurableTaskOptions,
        HostConfig,
        HttpSettingsOptions,
        InstanceRetentionOptions,
        StorageProviderOptions,
        load_config,
    )
    from durable_ext.errors import (
        AppLoadError,
        AzuriteError,
        ConfigError,
        DurableExtError,
        InstanceExistsError,
        InstanceGoneError,
        InstanceNotEndedError,
        InstanceNotFoundError,
        InvalidHubNameError,
        InvalidInstanceIdError,
        InvalidInstanceStateError,
        InvalidOperationError,
        MessageFormatError,
        NotJsonError,
        OwnershipLostError,
        PayloadTooLargeError,
        ReplayMismatchError,
        StorageError,
        StorageUnreachableError,
        TaskHubNotFoundError,
        ValidationError,
    )
    from durable_ext.executor import ExecutionRequest, OrchestrationExecutor, OrchestratorRun
    from durable_ext.history import OrchestrationStatus
    from durable_ext.host.azurite import Azurite
    from durable_ext.host.local import LocalHost, LocalHostOptions
    from durable_ext.replay_logging import ReplaySafeLogger, replay_safe_logger
    from durable_ext.storage.account import StorageAccount
    from durable_ext.storage.taskhub import TaskHub
    from durable_ext.storage.tracking import InstanceQuery
    from durable_ext.worker.engine import Engine

# Where each public name lives. The package imports nothing at import time: azure-functions-durable
# reads ./host.json when it is imported, and the command line checks that file first (see __main__).
_EXPORTS: dict[str, str] = {
    "AppLoadError": "durable_ext.errors",
    "Azurite": "durable_ext.host.azurite",
    "AzuriteError": "durable_ext.errors",
    "ConfigError": "durable_ext.errors",
    "DurableExtError": "durable_ext.errors",
    "DurableTaskOptions": "durable_ext.config",
    "Engine": "durable_ext.worker.engine",
    "EntityQueryResult": "durable_ext.client",
    "EntitySnapshot": "durable_ext.client",
    "ExecutionRequest": "durable_ext.executor",
    "FunctionRegistry": "durable_ext.app_loader",
    "HostConfig": "durable_ext.config",
    "HttpSettingsOptions": "durable_ext.config",
    "InstanceExistsError": "durable_ext.errors",
    "InstanceGoneError": "durable_ext.errors",
    "InstanceNotEndedError": "durable_ext.errors",
    "InstanceNotFoundError": "durable_ext.errors",
    "InstanceQuery": "durable_ext.storage.tracking",
    "InstanceQueryResult": "durable_ext.client",
    "InstanceRetentionOptions": "durable_ext.config",
    "InvalidHubNameError": "durable_ext.errors",
    "InvalidInstanceIdError": "durable_ext.errors",
    "InvalidInstanceStateError": "durable_ext.errors",
    "InvalidOperationError": "durable_ext.errors",
    "LocalHost": "durable_ext.host.local",
    "LocalHostOptions": "durable_ext.host.local",
    "MessageFormatError": "durable_ext.errors",
    "NotJsonError": "durable_ext.errors",
    "OrchestrationExecutor": "durable_ext.executor",
    "OrchestrationState": "durable_ext.client",
    "OrchestrationStatus": "durable_ext.history",
    "OrchestratorRun": "durable_ext.executor",
    "OwnershipLostError": "durable_ext.errors",
    "PayloadTooLargeError": "durable_ext.errors",
    "ReplayMismatchError": "durable_ext.errors",
    "ReplaySafeLogger": "durable_ext.replay_logging",
    "StorageAccount": "durable_ext.storage.account",
    "StorageError": "durable_ext.errors",
    "StorageProviderOptions": "durable_ext.config",
    "StorageUnreachableError": "durable_ext.errors",
    "TaskHub": "durable_ext.storage.taskhub",
    "TaskHubClient": "durable_ext.client",
    "TaskHubNotFoundError": "durable_ext.errors",
    "ValidationError": "durable_ext.errors",
    "load_app": "durable_ext.app_loader",
    "load_config": "durable_ext.config",
    "replay_safe_logger": "durable_ext.replay_logging",
}

__all__ = [
    "AppLoadError",
    "Azurite",
    "AzuriteError",
    "ConfigError",
    "DurableExtError",
    "DurableTaskOptions",
    "Engine",
    "EntityQueryResult",
    "EntitySnapshot",
    "ExecutionRequest",
    "FunctionRegistry",
    "HostConfig",
    "HttpSettingsOptions",
    "InstanceExistsError",
    "InstanceGoneError",
    "InstanceNotEndedError",
    "InstanceNotFoundError",
    "InstanceQuery",
    "InstanceQueryResult",
    "InstanceRetentionOptions",
    "InvalidHubNameError",
    "InvalidInstanceIdError",
    "InvalidInstanceStateError",
    "InvalidOperationError",
    "LocalHost",
    "LocalHostOptions",
    "MessageFormatError",
    "NotJsonError",
    "OrchestrationExecutor",
    "OrchestrationState",
    "OrchestrationStatus",
    "OrchestratorRun",
    "OwnershipLostError",
    "PayloadTooLargeError",
    "ReplayMismatchError",
    "ReplaySafeLogger",
    "StorageAccount",
    "StorageError",
    "StorageProviderOptions",
    "StorageUnreachableError",
    "TaskHub",
    "TaskHubClient",
    "TaskHubNotFoundError",
    "ValidationError",
    "load_app",
    "load_config",
    "replay_safe_logger",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's attributes, the lazily imported public names included."""
    return sorted({*globals(), *__all__})
