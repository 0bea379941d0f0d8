"""The local host behind ``python -m durable_ext start``, our stand-in for ``func start``, and ``worker``.

It does what the Functions host and the Durable Task extension do on a developer machine: apply the
app settings, start Azurite when the app uses ``UseDevelopmentStorage=true`` and nothing answers on
Azurite's ports, create the task hub, import the app, run the engine, and serve the HTTP-triggered
functions, the Durable Functions management API and the dashboard over HTTP, with the health probes.

As a worker (``worker``) it runs the engine only: its listener serves the probes and nothing else, and
it never starts Azurite. On SIGTERM or SIGINT both drain the engine (:meth:`Engine.drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import uvicorn
from azure.durable_functions.models.utils import http_utils as df_http_utils
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request

from durable_ext import tracing
from durable_ext.app_loader import (
    FunctionKind,
    FunctionRegistry,
    RegisteredFunction,
    function_folders,
    load_app,
)
from durable_ext.client import TaskHubClient
from durable_ext.config import HOST_JSON, HostConfig, load_config
from durable_ext.dashboard.api import DASHBOARD_PREFIX, DashboardOptions, dashboard_mount
from durable_ext.dashboard.hubs import DashboardHub, HubSet, read_only_from
from durable_ext.errors import ConfigError
from durable_ext.host.admin import AdminContext, admin_routes
from durable_ext.host.api import management_mounts, new_rpc_path, not_found_answer
from durable_ext.host.azurite import (
    DEFAULT_PORTS,
    Azurite,
    AzuritePorts,
    dev_connection_string,
    find_azurite,
    ports_answer,
)
from durable_ext.host.cors import CorsMiddleware, CorsPolicy
from durable_ext.host.df_json import client_binding_json
from durable_ext.host.guard import check_system_key, presents_key
from durable_ext.host.http import http_trigger_routes
from durable_ext.host.metrics import metrics_routes
from durable_ext.host.probes import probe_routes, probes_app
from durable_ext.host.supervisor import supervise
from durable_ext.host.traces import TracingMiddleware
from durable_ext.storage.account import DEV_HOST, StorageAccount
from durable_ext.storage.outage import storage_health
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine

logger = logging.getLogger(__name__)

AZURITE_DATA_DIR = ".durable_ext/azurite"
"""Where the local host keeps Azurite's data inside the app directory, so instances survive restarts."""
SYSTEM_KEY_SETTING = "DURABLE_EXT_SYSTEM_KEY"
"""App setting with the key the management API and non-anonymous HTTP functions require."""
SHUTDOWN_GRACE_SECONDS = 10
"""How long Ctrl+C waits for requests in progress (a long-polling wait, say) before cancelling them."""
DEFAULT_GRACE_PERIOD = timedelta(seconds=30)
"""How long a stop lets the engine drain (Kubernetes' default terminationGracePeriodSeconds)."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves SIGINT and SIGTERM to whoever runs the host: uvicorn's own handlers,
    installed while it serves, would take the first signal from the host's drain and, once restored,
    leave a second one to a handler that no longer sees it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Capture nothing: the host's caller handles the signals (see ``cli._run_host``)."""
        yield


@dataclass
class LocalHostOptions:
    """How ``start`` was asked to run."""

    app_dir: Path
    port: int = 7071
    host: str = "127.0.0.1"
    azurite_in_memory: bool = False
    """Start Azurite without persistence (data is lost when the host stops)."""
    azurite_ports: AzuritePorts = DEFAULT_PORTS
    """Where ``UseDevelopmentStorage=true`` looks for Azurite, and where the host starts it."""
    output: Callable[[str], None] = field(default=print)
    cors: CorsPolicy | None = None
    """Cross-origin callers answered with CORS headers (``--cors``); None: none, as ``func start``."""
    functions: tuple[str, ...] | None = None
    """Load and serve only these functions (``--functions``); None: host.json's ``functions``, else all."""
    worker: bool = False
    """Run the engine only (``worker``): ``port`` serves the probes alone, Azurite is never started."""
    admin_port: int | None = None
    """A second listener, on ``host``, serving only the probes, ``/metrics`` and ``/scale``
    (``--admin-port``); None: none."""
    grace_period: timedelta = DEFAULT_GRACE_PERIOD
    """How long a stop waits for in-flight episodes and activities before the process exits anyway."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listening address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names_default_azurite(value: str) -> bool:
    """Whether an app setting is ``UseDevelopmentStorage=true`` without a proxy: Azurite's default ports."""
    try:
        account = StorageAccount.from_connection_string(value)
    except ConfigError:
        return False  # not a connection string
    return account.development_storage and account.blob_endpoint.startswith(f"http://{DEV_HOST}:")


def on_azurite_ports(account: StorageAccount, ports: AzuritePorts) -> StorageAccount:
    """``account``, unless it is ``UseDevelopmentStorage=true`` and ``ports`` (``--azurite-port``) are
    not Azurite's defaults: then the development account on those ports."""
    if not account.development_storage or ports == DEFAULT_PORTS:
        return account
    # UseDevelopmentStorage=true names Azurite's default ports; --azurite-port moves all three.
    moved = StorageAccount.from_connection_string(dev_connection_string(DEV_HOST, ports))
    return dataclasses.replace(moved, development_storage=True)


def self_address(host: str) -> str:
    """The address (URL host part) this process reaches its own server at when it listens on ``host``:
    loopback when it listens there or on every address, else the one address it listens on."""
    if host in ("", "0.0.0.0", "localhost"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a host name
    return f"[{address}]" if address.version == 6 else str(address)


def ensure_azurite(
    account: StorageAccount, ports: AzuritePorts, location: Path | None, output: Callable[[str], None]
) -> Azurite | None:
    """Start Azurite on ``ports`` when ``account`` is ``UseDevelopmentStorage=true`` and nothing answers
    there; returns it (the caller stops it), or None when nothing was started.

    ``location`` keeps its data (None: in memory).
    """
    if not account.development_storage or ports_answer(DEV_HOST, ports):
        return None
    if location is not None:
        location.mkdir(parents=True, exist_ok=True)
    # Found (or installed, which says so and reports progress) before "Starting Azurite" is printed.
    executable = find_azurite(progress=output)
    output(
        f"Starting Azurite on ports {ports.blob}-{ports.table} "
        f"({'in memory' if location is None else location})..."
    )
    azurite = Azurite(ports=ports, location=location, executable=executable)
    azurite.start()
    return azurite


class LocalHost:
    """Runs one Functions app locally: settings, storage, task hub, engine, HTTP."""

    def __init__(self, options: LocalHostOptions) -> None:
        self.options = options
        self.app_dir = options.app_dir.expanduser().resolve()
        self.config: HostConfig = load_config(self.app_dir)
        self.system_key = self.config.settings.get(SYSTEM_KEY_SETTING) or None
        # A worker's listener serves only the probes, which need no key and give nothing away.
        exposed = not is_loopback(options.host) and not options.worker
        if exposed and not self.system_key:
            raise ConfigError(
                f"listening on {options.host} exposes the management API beyond this machine: set the "
                f"{SYSTEM_KEY_SETTING} app setting to a secret key first"
            )
        if self.system_key is not None:
            check_system_key(self.system_key, setting=SYSTEM_KEY_SETTING, exposed=exposed)
        elif not is_loopback(options.host):
            logger.warning(
                "without %s, /metrics and /scale on %s answer anyone who reaches the port: they name the "
                "task hub's queues and its load",
                SYSTEM_KEY_SETTING,
                options.host,
            )
        # A wrong exporter name stops the host before anything starts.
        tracing.exporter_names(self.config.settings)
        self.azurite: Azurite | None = None
        self.registry: FunctionRegistry | None = None
        """The functions this host loads and serves (the app's, less those an allow list leaves out)."""
        self.app_functions: FunctionRegistry | None = None
        """Every function of the app, as ``/admin/functions`` lists them."""

    def _apply_settings(self) -> None:
        # Functions exposes app settings to user code as environment variables; the real
        # environment keeps precedence (load_config already merged it over local.settings.json).
        ports = self.options.azurite_ports
        for name, value in self.config.settings.items():
            os.environ.setdefault(name, value)
            if ports != DEFAULT_PORTS and _names_default_azurite(os.environ[name]):
                # The SDKs the app uses read UseDevelopmentStorage=true as Azurite's default ports, which
                # --azurite-port moved: the app gets the connection string of the Azurite it runs with.
                os.environ[name] = dev_connection_string(DEV_HOST, ports)
                logger.info("app setting %s points at Azurite on ports %d-%d", name, ports.blob, ports.table)

    def _storage_account(self) -> StorageAccount:
        account = StorageAccount.from_connection(self.config.storage_connection())
        return on_azurite_ports(account, self.options.azurite_ports)

    def _ensure_azurite(self, account: StorageAccount) -> None:
        location = None if self.options.azurite_in_memory else self.app_dir / AZURITE_DATA_DIR
        self.azurite = ensure_azurite(account, self.options.azurite_ports, location, self.options.output)

    def _check_ports(self) -> None:
        ports = {self.options.port: "--admin-port" if self.options.worker else "--port"}
        if self.options.admin_port is not None:
            if self.options.admin_port in ports:
                raise ConfigError("--admin-port must differ from the HTTP port")
            ports[self.options.admin_port] = "--admin-port"
        for port, flag in ports.items():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.options.host, port))
                except OSError as exc:
                    raise ConfigError(
                        f"port {port} on {self.options.host} is in use: stop the other process or pass {flag}"
                    ) from exc

    async def prepare(self) -> StorageAccount:
        """Load settings and the app, make sure storage answers, create the task hub."""
        self._apply_settings()
        # After the settings: the SDK reads OTEL_SERVICE_NAME and the OTLP endpoint from the environment.
        tracing.configure(self.config.settings)
        account = self._storage_account()
        # Import the user's code first: a broken app should fail before anything is started.
        allow_list = self._allow_list()
        self.app_functions = load_app(
            self.app_dir, settings=self.config.settings, only=None if allow_list is None else allow_list[0]
        )
        self.registry = self._allowed(self.app_functions, allow_list)
        self._check_ports()
        if not self.options.worker:
            self._ensure_azurite(account)
        options = self.config.durable_task
        async with TaskHub(account, options.hub_name, options.storage_provider.partition_count) as hub:
            await hub.create()
        self._print_functions(account)
        return account

    def _allow_list(self) -> tuple[Sequence[str], str] | None:
        """The allow list (``--functions``, else host.json's ``functions``) and where it comes from."""
        if self.options.functions is not None:
            return self.options.functions, "--functions"
        if self.config.functions is not None:
            return self.config.functions, f"functions in {self.app_dir / HOST_JSON}"
        return None

    def _allowed(
        self, registry: FunctionRegistry, allow_list: tuple[Sequence[str], str] | None
    ) -> FunctionRegistry:
        """The functions the allow list keeps (a v1 app's others were not even imported).

        Names are Functions names compared ignoring case, as the host's allow list compares them.
        """
        if allow_list is None:
            return registry
        names, source = allow_list
        wanted = {name.lower() for name in names}
        kept = tuple(function for function in registry.functions if function.function_name.lower() in wanted)
        every_name = self._function_names(registry)
        if not kept:
            available = ", ".join(every_name) or "none"
            raise ConfigError(f"{source} names no function of the app; its functions are: {available}")
        present = {name.lower() for name in every_name}
        for name in names:
            if name.lower() not in present:
                logger.warning("%s names %r, which is not a function of the app", source, name)
        self.options.output(
            "A function allow list has been specified, excluding all but the following functions: "
            f"[{', '.join(names)}]"
        )
        return FunctionRegistry(kept)

    def _function_names(self, registry: FunctionRegistry) -> list[str]:
        """Every function of the app: for a v1 app its folders, imported or not."""
        if registry.programming_model == "v1":
            return [folder.name for folder in function_folders(self.app_dir)]
        return [function.function_name for function in registry.functions]

    @property
    def base_url(self) -> str:
        """Origin the host's own URLs use when no request tells otherwise."""
        return self._origin(self.options.port)

    def _origin(self, port: int) -> str:
        host = "localhost" if is_loopback(self.options.host) else self.options.host
        return f"http://{host}:{port}"

    def _serves(self, function: RegisteredFunction) -> bool:
        """Whether this process runs ``function``: a worker leaves the HTTP functions out."""
        return not (self.options.worker and function.kind is FunctionKind.HTTP)

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
        for function in filter(self._serves, self.registry.functions):
            if function.kind is FunctionKind.HTTP and function.http is not None:
                methods = ",".join(function.http.methods)
                out(f"        {function.name}: [{methods}] {self.base_url}{prefix}/{function.http.route}")
            else:
                out(f"        {function.name}: {function.trigger_type}")
        out("")
        self._print_disabled()

    def _print_disabled(self) -> None:
        assert self.registry is not None
        for function in filter(self._serves, self.registry.functions):
            if not function.disabled:
                continue
            # The WebJobs SDK's line when it skips a disabled function's listener.
            line = f"Function 'Functions.{function.function_name}' is disabled"
            if function.kind is FunctionKind.HTTP and self.system_key is None:
                line += (
                    f"; without {SYSTEM_KEY_SETTING} every caller has admin rights, as under func start,"
                    " so its route still runs it"
                )
            self.options.output(line)

    def build_app(self, hub: TaskHub, client: TaskHubClient, engine: Engine) -> Starlette:
        """The ASGI app: the probes and, unless a worker, the HTTP-triggered functions, the management
        API and the df client's RPC mount."""
        if self.options.worker:
            return probes_app(engine, self.system_key)
        assert self.registry is not None
        registry = self.registry
        hub_name = hub.names.hub
        connection = self.config.durable_task.storage_provider.connection_name
        # The df client sends no key on its own calls; like DF's local RPC endpoint, it gets a path of
        # its own that only this process knows, on loopback.
        rpc_path = new_rpc_path()
        rpc_base = f"http://{self_address(self.options.host)}:{self.options.port}{rpc_path}/"

        def binding(request: Request) -> str:
            origin = f"{request.url.scheme}://{request.url.netloc}"
            # The management URLs a function hands out carry the key only to a caller that presented
            # it: a caller of an anonymous function must not come away with management rights.
            key = self.system_key if self.system_key and presents_key(request, self.system_key) else None
            return client_binding_json(origin, hub_name, connection, key, rpc_base_url=rpc_base)

        assert self.app_functions is not None
        admin = AdminContext(
            registry=self.app_functions,
            app_dir=self.app_dir,
            route_prefix=self.config.route_prefix,
            settings=self.config.settings,
            system_key=self.system_key,
        )
        routes = [
            *probe_routes(engine),
            *metrics_routes(engine, self.system_key),
            *management_mounts(
                client, rpc_path, system_key=self.system_key, functions=registry, connection_name=connection
            ),
            *admin_routes(admin),
            dashboard_mount(
                DashboardOptions(
                    HubSet([DashboardHub.of(client)]),
                    system_key=self.system_key,
                    read_only=read_only_from(self.config.settings),
                )
            ),
            *http_trigger_routes(
                registry,
                self.config.route_prefix,
                binding,
                function_key=self.system_key,
            ),
        ]
        cors = self.options.cors
        middleware = [Middleware(TracingMiddleware)] if tracing.enabled() else []
        if cors:
            middleware.append(Middleware(CorsMiddleware, policy=cors))
        return Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found_answer})

    def stop(self) -> None:
        """Release what the host started (Azurite)."""
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None

    async def run(self, stop: asyncio.Event) -> bool:
        """Prepare, run the engine and the HTTP server until ``stop`` is set, then drain the engine.

        Returns whether the engine drained within the grace period; False: what is left still runs and
        the caller should end the process (:meth:`Engine.drain`). Raises AzuriteError when the Azurite
        this host started keeps exiting.
        """
        try:
            account = await self.prepare()
            assert self.registry is not None
            options = self.config.durable_task
            async with TaskHub(account, options.hub_name, options.storage_provider.partition_count) as hub:
                engine = Engine(hub, self.registry, options)
                await engine.start()
                # The drain starts with the stop, while the HTTP listeners finish their requests.
                draining = asyncio.create_task(self._drain_when(stop, engine, account))
                try:
                    await self._serve(hub, engine, stop)
                finally:
                    stop.set()  # also when a listener or the Azurite supervisor ended the host
                    drained = await draining
            return drained
        finally:
            tracing.flush()
            self.stop()

    async def _drain_when(self, stop: asyncio.Event, engine: Engine, account: StorageAccount) -> bool:
        await stop.wait()
        # Handing partitions over needs storage; while it is away, leave the leases to expire rather
        # than wait for the shutdown timeout.
        azurite_alive = self.azurite is None or self.azurite.running
        reachable = azurite_alive and storage_health.reachable(account.describe())
        return await engine.drain(self.options.grace_period, release=reachable)

    def _server(self, app: Starlette, port: int) -> uvicorn.Server:
        config = uvicorn.Config(
            app,
            host=self.options.host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
        return _Server(config)

    def _ready_line(self) -> str:
        if self.options.worker:
            return (
                f"Worker ready; probes on {self.base_url}/healthz and /readyz, metrics on /metrics."
                " Press Ctrl+C to stop."
            )
        line = f"Host ready on {self.base_url}. Dashboard: {self.base_url}{DASHBOARD_PREFIX}/."
        if self.options.admin_port is not None:
            line += f" Probes also on {self._origin(self.options.admin_port)}."
        return f"{line} Press Ctrl+C to stop."

    async def _serve(self, hub: TaskHub, engine: Engine, stop: asyncio.Event) -> None:
        options = self.config.durable_task
        client = TaskHubClient(
            hub,
            overridable_states=options.overridable_existing_instance_states,
            handoff=engine,
            default_version=options.default_version,
        )
        servers = [self._server(self.build_app(hub, client, engine), self.options.port)]
        if self.options.admin_port is not None:
            servers.append(self._server(probes_app(engine, self.system_key), self.options.admin_port))
        serving = {asyncio.create_task(server.serve()) for server in servers}
        # "Host ready" is what callers wait for: say it only once the sockets accept connections.
        while not all(server.started for server in servers) and not any(task.done() for task in serving):
            await asyncio.sleep(0.01)
        self.options.output(self._ready_line())
        watched = {*serving, asyncio.create_task(stop.wait())}
        if self.azurite is not None:
            watched.add(asyncio.create_task(supervise(self.azurite, self.options.output, hub.create)))
        done, pending = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for server in servers:
            server.should_exit = True
        for task in pending - serving:
            task.cancel()
        for task in serving:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The df client keeps one aiohttp session per process; the Functions worker closes it at
        # shutdown, and so do we.
        await df_http_utils._close_session()
        for task in done - serving:
            # A supervisor that gave up on Azurite ends the host with its error.
            task.result()
