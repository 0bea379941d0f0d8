"""The test host behind :class:`durable_ext.testing.DurableTestHost` and the pytest plugin.

A test host runs the real :class:`~durable_ext.worker.engine.Engine` in-process for one app, on a task
hub of its own (created on entry, deleted on exit) in an Azurite shared by the whole process, and hands
out a small client to start orchestrations, wait for them, raise events, signal and read entities and
replace activities with mocks. Entered with ``async with`` it gives an :class:`AsyncHostClient` running
on the caller's event loop; entered with ``with`` a :class:`HostClient` whose methods block, backed by
an event loop on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import threading
import uuid
import warnings
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from durable_ext.app_loader import FunctionKind, FunctionRegistry, RegisteredFunction, load_app
from durable_ext.client import TaskHubClient
from durable_ext.clock import SYSTEM_CLOCK, SkippingClock
from durable_ext.config import load_config
from durable_ext.history import HistoryEvent, OrchestrationStatus
from durable_ext.host.azurite import Azurite
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from durable_ext.worker.partitions import PartitionManagerOptions
from durable_ext.worker.time_skipping import TimeSkipper

STORAGE_SETTING = "AzureWebJobsStorage"
"""The environment variable naming the storage a test host uses when given no connection string."""

FAST_LEASES = PartitionManagerOptions(
    acquire_interval=timedelta(milliseconds=100),
    lease_interval=timedelta(seconds=3),
    claim_duration=timedelta(seconds=3),
    fast_interval=timedelta(milliseconds=100),
)
"""Lease timings short enough that an engine owns its partitions (and fails over) within a second."""

_T = TypeVar("_T")
_NO_MOCK = object()

_shared_azurite: Azurite | None = None
_shared_lock = threading.Lock()


def shared_azurite() -> Azurite:
    """The process's in-memory Azurite on free ports, started on first use (stopped when Python exits)."""
    global _shared_azurite  # noqa: PLW0603 - one emulator per process is the point
    with _shared_lock:
        if _shared_azurite is None or not _shared_azurite.running:
            azurite = Azurite()
            azurite.start()
            _shared_azurite = azurite
        return _shared_azurite


def default_connection_string() -> str:
    """The storage test hosts use by default: ``AzureWebJobsStorage`` from the environment, unless it is
    missing or names the development storage (``UseDevelopmentStorage=true``: Azurite's default ports,
    where nothing may run), in which case the process's shared Azurite (:func:`shared_azurite`)."""
    configured = os.environ.get(STORAGE_SETTING, "")
    if configured and not StorageAccount.from_connection_string(configured).development_storage:
        return configured
    return shared_azurite().connection_string


@contextlib.contextmanager
def app_settings_environment(settings: Mapping[str, str], connections: Mapping[str, str]) -> Iterator[None]:
    """The app's settings as environment variables while a test host runs, as Functions exposes them
    to user code; the real environment keeps precedence, except that each storage connection in
    ``connections`` (setting name → connection string) is the one the test host runs on, so the app's
    own storage clients reach the same Azurite. Everything is put back on exit."""
    wanted = {name: value for name, value in settings.items() if name not in os.environ}
    wanted.update(connections)
    previous = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class InstanceStatus:
    """An orchestration instance as :meth:`AsyncHostClient.wait` found it.

    ``output`` and ``custom_status`` are decoded from JSON (text that is not JSON, such as a failed
    instance's error message, is kept as it is); ``history`` holds the current execution's events.
    """

    instance_id: str
    name: str | None
    runtime_status: OrchestrationStatus | None
    output: Any
    custom_status: Any
    history: list[HistoryEvent]


def _decoded(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _encoded(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


async def _awaited(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def _mockable(function: RegisteredFunction, mocks: Mapping[str, Any]) -> RegisteredFunction:
    """``function`` calling the mock registered under its name instead of itself, while there is one."""
    original = function.callable
    key = function.name.lower()

    def call(**arguments: Any) -> Any:
        mock = mocks.get(key, _NO_MOCK)
        if mock is _NO_MOCK:
            return original(**arguments)
        result = mock(arguments[function.trigger_param]) if callable(mock) else mock
        if function.is_async:
            return _awaited(result)  # the engine awaits what an async activity returns
        # A sync activity runs on a worker thread, which has no event loop: an async mock runs here.
        return asyncio.run(result) if inspect.iscoroutine(result) else result

    return dataclasses.replace(function, callable=call)


class AsyncHostClient:
    """The client of a running test host; its methods run on the host's event loop."""

    def __init__(
        self,
        hub: TaskHub,
        client: TaskHubClient,
        registry: FunctionRegistry,
        mocks: dict[str, Any],
        skipper: TimeSkipper | None = None,
    ) -> None:
        """``mocks`` is the table the host's activities look their replacements up in, by lower-cased
        name; ``skipper`` skips time while :meth:`wait` waits (a host with time skipping)."""
        self.hub = hub
        """The host's task hub (a fresh one, deleted when the host exits)."""
        self.client = client
        """The storage-level client, for what this small one does not cover."""
        self._registry = registry
        self._mocks = mocks
        self._skipper = skipper

    def mock_activity(self, name: str, fn_or_value: Any) -> None:
        """Replace the activity ``name`` for this host: a callable gets the activity's input and its
        result (awaited when it is awaitable) is the activity's; any other value is the result itself."""
        function = self._registry.get(name, FunctionKind.ACTIVITY)
        if function is None:
            raise ValueError(f"the app has no activity named {name!r}")
        self._mocks[function.name.lower()] = fn_or_value

    async def start(self, name: str, input: Any = None, instance_id: str | None = None) -> str:
        """Start the orchestrator ``name`` with ``input`` (any JSON value); returns the instance ID."""
        return await self.client.start_new(name, instance_id, _encoded(input))

    async def wait(self, instance_id: str, timeout: float = 30) -> InstanceStatus:
        """Wait until the instance completes, fails or is terminated; TimeoutError after ``timeout`` s.

        On a host with time skipping, durable timers fire meanwhile as soon as nothing else can run.
        """
        skipping = self._skipper.skipping() if self._skipper is not None else contextlib.nullcontext()
        async with skipping:
            state = await self.client.wait_for_completion(instance_id, timeout)
        load = await self.hub.tracking.load_history(instance_id)
        return InstanceStatus(
            instance_id=state.instance_id,
            name=state.name,
            runtime_status=state.runtime_status,
            output=_decoded(state.output),
            custom_status=_decoded(state.custom_status),
            history=load.events,
        )

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Send the external event ``name`` with ``data`` (any JSON value) to a running instance."""
        await self.client.raise_event(instance_id, name, _encoded(data))

    async def signal_entity(self, entity_id: Any, operation: str, input: Any = None) -> None:
        """Send ``operation`` to the entity ``entity_id`` (``"@name@key"`` or a ``df.EntityId``)."""
        await self.client.signal_entity(str(entity_id), operation, _encoded(input))

    async def read_entity(self, entity_id: Any) -> Any:
        """The entity's state, decoded from JSON; None when it does not exist (yet)."""
        snapshot = await self.client.read_entity_state(str(entity_id))
        return _decoded(snapshot.state)


class HostClient:
    """The blocking flavour of :class:`AsyncHostClient`, for synchronous code and tests."""

    def __init__(self, inner: AsyncHostClient, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        """The asynchronous client this one drives on the host's loop."""
        self._loop = loop

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def mock_activity(self, name: str, fn_or_value: Any) -> None:
        """See :meth:`AsyncHostClient.mock_activity`."""
        self.inner.mock_activity(name, fn_or_value)

    def start(self, name: str, input: Any = None, instance_id: str | None = None) -> str:
        """See :meth:`AsyncHostClient.start`."""
        return self._run(self.inner.start(name, input, instance_id))

    def wait(self, instance_id: str, timeout: float = 30) -> InstanceStatus:
        """See :meth:`AsyncHostClient.wait`."""
        return self._run(self.inner.wait(instance_id, timeout))

    def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """See :meth:`AsyncHostClient.raise_event`."""
        self._run(self.inner.raise_event(instance_id, name, data))

    def signal_entity(self, entity_id: Any, operation: str, input: Any = None) -> None:
        """See :meth:`AsyncHostClient.signal_entity`."""
        self._run(self.inner.signal_entity(entity_id, operation, input))

    def read_entity(self, entity_id: Any) -> Any:
        """See :meth:`AsyncHostClient.read_entity`."""
        return self._run(self.inner.read_entity(entity_id))


class DurableTestHost:
    """Run the app in ``app_dir`` (v1 or v2) on a fresh task hub, in this process.

    ``connection_string`` names the storage; None: :func:`default_connection_string`. ``async with`` gives
    an :class:`AsyncHostClient`, ``with`` a :class:`HostClient`. The task hub is deleted on exit.
    ``time_skipping``: while the client waits for an orchestration, durable timers fire as soon as
    nothing else can run, the orchestrations' clock jumping forward to them (see
    :mod:`durable_ext.worker.time_skipping`).
    """

    def __init__(
        self, app_dir: str | Path, *, connection_string: str | None = None, time_skipping: bool = False
    ) -> None:
        self.app_dir = Path(app_dir).resolve()
        self.connection_string = connection_string
        self.time_skipping = time_skipping
        self._stack: contextlib.AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> AsyncHostClient:
        config = load_config(self.app_dir)
        connection = self.connection_string or default_connection_string()
        async with contextlib.AsyncExitStack() as stack:
            connection_name = config.durable_task.storage_provider.connection_name
            stack.enter_context(app_settings_environment(config.settings, {connection_name: connection}))
            with warnings.catch_warnings():
                # Apps written for older SDKs may import deprecated names; no failure of theirs here.
                warnings.simplefilter("ignore", DeprecationWarning)
                registry = load_app(self.app_dir, settings=config.settings)
            mocks: dict[str, Any] = {}
            functions = tuple(
                _mockable(f, mocks) if f.kind is FunctionKind.ACTIVITY else f for f in registry.functions
            )
            mockable = FunctionRegistry(functions, registry.programming_model)
            options = dataclasses.replace(config.durable_task, hub_name="DurableTest" + uuid.uuid4().hex[:12])
            account = StorageAccount.from_connection_string(connection)
            hub = await stack.enter_async_context(
                TaskHub(account, options.hub_name, options.storage_provider.partition_count)
            )
            await hub.create()
            stack.push_async_callback(hub.delete)
            clock = SkippingClock() if self.time_skipping else SYSTEM_CLOCK
            engine = Engine(hub, mockable, options, partition_options=FAST_LEASES, clock=clock)
            await stack.enter_async_context(engine)
            skipper = None
            if isinstance(clock, SkippingClock):
                skipper = await stack.enter_async_context(TimeSkipper(engine, clock))
            client = AsyncHostClient(hub, TaskHubClient(hub, handoff=engine), mockable, mocks, skipper)
            self._stack = stack.pop_all()
        return client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    def __enter__(self) -> HostClient:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="durable-test-host", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            inner = asyncio.run_coroutine_threadsafe(self.__aenter__(), loop).result()
        except BaseException:
            self._stop_loop()
            raise
        return HostClient(inner, loop)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._loop is not None, "__exit__ without __enter__"
        try:
            asyncio.run_coroutine_threadsafe(self.__aexit__(exc_type, exc, tb), self._loop).result()
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
