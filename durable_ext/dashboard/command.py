"""``python -m durable_ext dashboard``: the dashboard alone, for any task hubs, without an app.

Hubs and storage accounts come from the command line (``--hub``, ``--connection``); the system key
and the read-only switch from the same settings ``start`` reads (the environment over the current
directory's ``local.settings.json``). ``UseDevelopmentStorage=true`` starts Azurite as ``start``
does when nothing answers on its ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.responses import RedirectResponse
from starlette.routing import Route

from durable_ext.client import TaskHubClient
from durable_ext.config import (
    DEFAULT_CONNECTION_NAME,
    StorageConnection,
    find_storage_connection,
    load_local_settings,
    missing_connection_message,
)
from durable_ext.dashboard.api import DASHBOARD_PREFIX, DashboardOptions, dashboard_mount
from durable_ext.dashboard.hubs import DashboardHub, HubSet, read_only_from
from durable_ext.errors import ConfigError
from durable_ext.host.azurite import DEFAULT_PORTS, Azurite, AzuritePorts
from durable_ext.host.guard import check_system_key
from durable_ext.host.local import (
    AZURITE_DATA_DIR,
    SHUTDOWN_GRACE_SECONDS,
    SYSTEM_KEY_SETTING,
    ensure_azurite,
    is_loopback,
    on_azurite_ports,
)
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub

logger = logging.getLogger(__name__)

_INSTANCES_SUFFIX = "Instances"
_HISTORY_SUFFIX = "History"


@dataclass
class DashboardCommandOptions:
    """How ``dashboard`` was asked to run."""

    hubs: Sequence[str] = ()
    """Task hub names; empty: every hub found on the accounts."""
    connections: Sequence[str] = (DEFAULT_CONNECTION_NAME,)
    """Connection strings, or names of settings holding one."""
    port: int = 7071
    host: str = "127.0.0.1"
    azurite_ports: AzuritePorts = DEFAULT_PORTS
    work_dir: Path = field(default_factory=Path.cwd)
    """Where ``local.settings.json`` is read from and Azurite keeps its data (``.durable_ext/azurite``)."""
    output: Callable[[str], None] = print


def command_settings(work_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings ``dashboard`` reads: ``local.settings.json`` Values, the environment over them."""
    return {**load_local_settings(work_dir), **(os.environ if environ is None else environ)}


def storage_connection(value: str, settings: Mapping[str, str]) -> StorageConnection:
    """A ``--connection`` value: a connection string as given, or the connection the setting it names
    defines, as ``start`` resolves its own (a connection string, or an identity-based connection)."""
    if "=" in value:
        return StorageConnection("--connection", connection_string=value)
    found = find_storage_connection(settings, value)
    if found is None:
        raise ConfigError(f"--connection {value}: {missing_connection_message(value)}")
    return found


def _system_key(settings: Mapping[str, str], host: str) -> str | None:
    key = settings.get(SYSTEM_KEY_SETTING) or None
    exposed = not is_loopback(host)
    if exposed and key is None:
        raise ConfigError(
            f"listening on {host} exposes the dashboard beyond this machine: set {SYSTEM_KEY_SETTING} first"
        )
    if key is not None:
        check_system_key(key, setting=SYSTEM_KEY_SETTING, exposed=exposed)
    return key


async def discover_hubs(account: StorageAccount) -> list[str]:
    """The task hubs of an account: every ``{hub}Instances`` table with its ``{hub}History``."""
    async with account.table_service() as tables:
        names = {table.name async for table in tables.list_tables()}
    return sorted(
        name.removesuffix(_INSTANCES_SUFFIX)
        for name in names
        if name.endswith(_INSTANCES_SUFFIX)
        and name != _INSTANCES_SUFFIX
        and f"{name.removesuffix(_INSTANCES_SUFFIX)}{_HISTORY_SUFFIX}" in names
    )


async def open_hub(stack: AsyncExitStack, account: StorageAccount, name: str) -> TaskHub | None:
    """The hub ``name`` on ``account`` with the partition count it was created with (messages must
    reach the control queue its workers read), or None if it does not exist."""
    async with TaskHub(account, name) as probe:
        partitions = await probe.stored_partition_count()
    if partitions == 0:
        return None
    hub = await stack.enter_async_context(TaskHub(account, name, partitions))
    return hub if (await hub.info()).exists else None


class DashboardServer:
    """The ``dashboard`` command's work: accounts, Azurite, hubs, then the HTTP server."""

    def __init__(self, options: DashboardCommandOptions) -> None:
        self.options = options
        self.settings = command_settings(options.work_dir)
        self.system_key = _system_key(self.settings, options.host)
        self.azurite: Azurite | None = None

    def accounts(self) -> list[StorageAccount]:
        """The storage accounts of ``--connection``, starting Azurite for the development one."""
        accounts = []
        for value in self.options.connections:
            # As for start: UseDevelopmentStorage=true means the Azurite of --azurite-port.
            account = on_azurite_ports(
                StorageAccount.from_connection(storage_connection(value, self.settings)),
                self.options.azurite_ports,
            )
            if self.azurite is None:
                location = self.options.work_dir / AZURITE_DATA_DIR
                self.azurite = ensure_azurite(
                    account, self.options.azurite_ports, location, self.options.output
                )
            accounts.append(account)
        return accounts

    async def hubs(self, stack: AsyncExitStack) -> list[DashboardHub]:
        """Every requested (or found) hub that exists on each account."""
        shown: list[DashboardHub] = []
        for account in self.accounts():
            names = list(self.options.hubs) or await discover_hubs(account)
            for name in names:
                hub = await open_hub(stack, account, name)
                if hub is None:
                    self.options.output(f"Task hub {name} does not exist on {account.account_name}; skipped")
                    continue
                shown.append(DashboardHub.of(TaskHubClient(hub)))
        if not shown:
            raise ConfigError("no task hub to show: name existing ones with --hub, or check --connection")
        return shown

    async def run(self, stop: asyncio.Event) -> None:
        """Serve the dashboard until ``stop`` is set."""
        try:
            async with AsyncExitStack() as stack:
                hubs = await self.hubs(stack)
                options = DashboardOptions(
                    HubSet(hubs), system_key=self.system_key, read_only=read_only_from(self.settings)
                )
                await self._serve(_app(options), hubs, stop)
        finally:
            if self.azurite is not None:
                self.azurite.stop()

    async def _serve(self, app: Starlette, hubs: list[DashboardHub], stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            app,
            host=self.options.host,
            port=self.options.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            serving.result()
            raise ConfigError(f"the dashboard could not listen on {self.options.host}:{self.options.port}")
        host = "localhost" if is_loopback(self.options.host) else self.options.host
        for hub in hubs:
            self.options.output(f"Task hub: {hub.hub} on {hub.account}")
        self.options.output(
            f"Dashboard ready on http://{host}:{self.options.port}{DASHBOARD_PREFIX}/. Press Ctrl+C to stop."
        )
        waiting = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


def _app(options: DashboardOptions) -> Starlette:
    async def home(request: object) -> RedirectResponse:
        return RedirectResponse(f"{DASHBOARD_PREFIX}/")

    return Starlette(routes=[Route("/", home), dashboard_mount(options)])
