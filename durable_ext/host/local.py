"""The local host behind ``python -m durable_ext start``, our stand-in for ``func start``.

It prepares everything an app needs on a developer machine: the app settings, Azurite (started here
when the app uses ``UseDevelopmentStorage=true`` and nothing answers on Azurite's ports), the task
hub, and the app's functions. The engine and the HTTP server attach to :class:`LocalHost` as they land.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from durable_ext.config import HostConfig, load_config
from durable_ext.host.app_loader import FunctionKind, FunctionRegistry, load_app
from durable_ext.host.azurite import DEFAULT_PORTS, Azurite, ports_answer
from durable_ext.storage.account import DEV_HOST, StorageAccount
from durable_ext.storage.taskhub import TaskHub

logger = logging.getLogger(__name__)

AZURITE_DATA_DIR = ".durable_ext/azurite"
"""Where the local host keeps Azurite's data inside the app directory, so instances survive restarts."""


@dataclass
class LocalHostOptions:
    """How ``start`` was asked to run."""

    app_dir: Path
    port: int = 7071
    azurite_in_memory: bool = False
    """Start Azurite without persistence (data is lost when the host stops)."""
    output: Callable[[str], None] = field(default=print)


class LocalHost:
    """Runs one Functions app locally: settings, storage, task hub, functions."""

    def __init__(self, options: LocalHostOptions) -> None:
        self.options = options
        self.app_dir = options.app_dir.expanduser().resolve()
        self.config: HostConfig = load_config(self.app_dir)
        self.azurite: Azurite | None = None
        self.registry: FunctionRegistry | None = None

    def _apply_settings(self) -> None:
        # Functions exposes app settings to user code as environment variables; the real
        # environment keeps precedence (load_config already merged it over local.settings.json).
        for name, value in self.config.settings.items():
            os.environ.setdefault(name, value)

    def _ensure_azurite(self, account: StorageAccount) -> None:
        if not account.development_storage or ports_answer(DEV_HOST, DEFAULT_PORTS):
            return
        location = None if self.options.azurite_in_memory else self.app_dir / AZURITE_DATA_DIR
        if location is not None:
            location.mkdir(parents=True, exist_ok=True)
        self.options.output(
            "Starting Azurite on ports "
            f"{DEFAULT_PORTS.blob}-{DEFAULT_PORTS.table} ({'in memory' if location is None else location})..."
        )
        self.azurite = Azurite(ports=DEFAULT_PORTS, location=location)
        self.azurite.start()

    async def prepare(self) -> None:
        """Load settings, make sure storage answers, create the task hub and load the app."""
        self._apply_settings()
        account = StorageAccount.from_connection_string(self.config.connection_string())
        # Import the user's code first: a broken app should fail before anything is started.
        self.registry = load_app(self.app_dir)
        self._ensure_azurite(account)
        options = self.config.durable_task
        async with TaskHub(account, options.hub_name, options.storage_provider.partition_count) as hub:
            await hub.create()
        self._print_functions(account)

    def _print_functions(self, account: StorageAccount) -> None:
        assert self.registry is not None
        out = self.options.output
        options = self.config.durable_task
        partitions = options.storage_provider.partition_count
        out(f"Task hub: {options.hub_name} ({partitions} partitions) on {account.describe()}")
        out("")
        out("Functions:")
        out("")
        prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
        for function in self.registry.functions:
            if function.kind is FunctionKind.HTTP and function.http is not None:
                methods = ",".join(function.http.methods)
                url = f"http://localhost:{self.options.port}{prefix}/{function.http.route}"
                out(f"        {function.name}: [{methods}] {url}")
            else:
                out(f"        {function.name}: {function.trigger_type}")
        out("")

    def stop(self) -> None:
        """Release what the host started (Azurite)."""
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None

    async def run(self, stop: asyncio.Event) -> None:
        """Prepare, then keep running until ``stop`` is set."""
        try:
            await self.prepare()
            self.options.output(
                "Host ready. The orchestration engine and HTTP serving are not part of this build yet; "
                "press Ctrl+C to stop."
            )
            await stop.wait()
        finally:
            self.stop()
