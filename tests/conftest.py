"""Shared pytest fixtures for the durable_ext test suite."""

from __future__ import annotations

import importlib
import logging
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest

from durable_ext.app_loader import FunctionRegistry, load_app
from durable_ext.host.azurite import Azurite
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from tests.engine_support import ENGINE_APP_DIR, engine_for

# The SDKs log every HTTP request and response at INFO: too loud for failure reports.
logging.getLogger("azure").setLevel(logging.WARNING)

PLUGIN_NAME = "durable_ext"
"""The name the package's ``pytest11`` entry point registers durable_ext.pytest_plugin under."""


def pytest_configure(config: pytest.Config) -> None:
    """Load the durable_host fixtures from the source tree unless the installed package's entry point
    (or ``-p durable_ext.pytest_plugin``) already did: a plugin registered twice is an error."""
    plugin = importlib.import_module("durable_ext.pytest_plugin")
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, PLUGIN_NAME)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite on free ports, shared by the whole test session."""
    with Azurite() as instance:
        yield instance


@pytest.fixture(scope="session")
def azurite_connection_string(azurite: Azurite) -> str:
    """The connection string of the session's Azurite."""
    return azurite.connection_string


@pytest.fixture(scope="session")
def durable_connection_string(azurite_connection_string: str) -> str:
    """The durable_host fixtures run on the session's Azurite too (overrides the plugin's)."""
    return azurite_connection_string


@pytest.fixture
def storage_account(azurite_connection_string: str) -> StorageAccount:
    """The session Azurite as a parsed storage account."""
    return StorageAccount.from_connection_string(azurite_connection_string)


@pytest.fixture
async def hub(storage_account: StorageAccount) -> AsyncIterator[TaskHub]:
    """A freshly created task hub with a unique name (4 partitions), deleted afterwards."""
    name = "T" + uuid.uuid4().hex[:12]
    async with TaskHub(storage_account, name, partition_count=4) as task_hub:
        await task_hub.create()
        yield task_hub
        await task_hub.delete()


@pytest.fixture(scope="session")
def registry() -> FunctionRegistry:
    """The functions of tests/apps/engine_app, loaded once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_app(ENGINE_APP_DIR)


@pytest.fixture
async def engine(hub: TaskHub, registry: FunctionRegistry) -> AsyncIterator[Engine]:
    """An engine running the test app on ``hub``."""
    async with engine_for(hub, registry, "worker-a") as running:
        yield running
