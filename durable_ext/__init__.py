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
    MessageFormatError,
    NotJsonError,
    NotSupportedError,
    OwnershipLostError,
    PayloadTooLargeError,
    StorageError,
    StorageUnreachableError,
    TaskHubNotFoundError,
    ValidationError,
)
from durable_ext.executor import ExecutionRequest, OrchestrationExecutor, OrchestratorRun
from durable_ext.history import OrchestrationStatus
from durable_ext.host.azurite import Azurite
from durable_ext.host.local import LocalHost, LocalHostOptions
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceQuery
from durable_ext.worker.engine import Engine

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
    "LocalHost",
    "LocalHostOptions",
    "MessageFormatError",
    "NotJsonError",
    "NotSupportedError",
    "OrchestrationExecutor",
    "OrchestrationState",
    "OrchestrationStatus",
    "OrchestratorRun",
    "OwnershipLostError",
    "PayloadTooLargeError",
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
]
