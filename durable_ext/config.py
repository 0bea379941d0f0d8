"""Configuration of a Durable Functions app: host.json, local.settings.json and the environment.

The Functions host merges three sources, later ones winning: ``host.json``, the ``Values`` of
``local.settings.json`` (which func core tools turns into environment variables) and the real
environment.  Host options can be overridden from the last two with names of the form
``AzureFunctionsJobHost__extensions__durableTask__<key>``.  :func:`load_config` reproduces that chain
for the options durable_ext implements (``extensions.durableTask`` and ``extensions.http.routePrefix``)
and returns one frozen :class:`HostConfig`.  Defaults follow Durable Functions extension v3.x on a
dedicated (non-consumption) plan.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from durable_ext.errors import ConfigError, InvalidHubNameError
from durable_ext.versioning import VersionFailureStrategy, VersioningPolicy, VersionMatchStrategy

logger = logging.getLogger(__name__)

HOST_JSON = "host.json"
"""File name of the host configuration inside the app directory."""

LOCAL_SETTINGS_JSON = "local.settings.json"
"""File name of the local app settings inside the app directory."""

DEFAULT_CONNECTION_NAME = "AzureWebJobsStorage"
"""App setting holding the storage connection string unless ``connectionName`` says otherwise."""

DEV_STORAGE_CONNECTION = "UseDevelopmentStorage=true"
"""The connection string that means the local Azurite (which ``start`` starts when nothing answers)."""

DEFAULT_HUB_NAME = "TestHubName"
"""Task hub name when neither ``hubName`` nor ``WEBSITE_SITE_NAME`` is set (DF extension v2+)."""

MANAGEMENT_ROUTE = "runtime/webhooks/durabletask"
"""Where the Durable Functions management API lives, as in the Functions host; no routePrefix may claim it."""

OVERRIDE_PREFIX = "AzureFunctionsJobHost"
"""First segment of app settings that override host.json keys."""

MIN_HUB_NAME_LENGTH = 3
"""Shortest task hub name accepted."""

MAX_HUB_NAME_LENGTH = 45
"""Longest task hub name accepted; leaves room for suffixes such as ``-largemessages``."""

_HUB_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_TIMESPAN_RE = re.compile(r"(?:([0-9]+)\.)?([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})(?:\.([0-9]{1,7}))?")
_INT_RE = re.compile(r"[+-]?[0-9]+")
_SETTING_REF_RE = re.compile(r"%([^%]+)%")
# .NET configuration treats "__" and ":" alike as the path separator of a setting name.
_OVERRIDE_SEPARATOR_RE = re.compile(r"__|:")


class OverridableStates(enum.Enum):
    """Which existing instances a new start with the same instance ID may replace."""

    NON_RUNNING_STATES = "NonRunningStates"
    ANY_STATE = "AnyState"


@dataclass(frozen=True)
class StorageProviderOptions:
    """Azure Storage provider options (``extensions.durableTask.storageProvider`` in host.json)."""

    connection_name: str = DEFAULT_CONNECTION_NAME
    partition_count: int = 4
    control_queue_batch_size: int = 32
    control_queue_buffer_threshold: int = 256
    control_queue_visibility_timeout: timedelta = timedelta(minutes=5)
    work_item_queue_visibility_timeout: timedelta = timedelta(minutes=5)
    max_queue_polling_interval: timedelta = timedelta(seconds=30)
    allow_replaying_terminal_instances: bool = False
    max_timer_delay: timedelta = timedelta(days=6)
    """Longest wait of one durable timer, and of one timer message in a queue (Azure Queues refuse
    delays over 7 days): the provider's ``MaximumDelayTime``. df splits a longer timer into
    ``long_timer_interval`` steps. Fixed in Durable Functions, so not read from host.json; tests
    shorten it."""
    long_timer_interval: timedelta = timedelta(days=3)
    """One step of a split timer: the provider's ``LongRunningTimerIntervalLength``."""


@dataclass(frozen=True)
class InstanceRetentionOptions:
    """Automatic purge of ended instances (``extensions.durableTask.instanceRetention``; durable_ext's own).

    Each retention is how long after it ended an instance of that status is kept; None keeps it for
    ever. The purge runs every ``purge_interval`` on the worker that holds the hub's first partition.
    """

    completed: timedelta | None = None
    failed: timedelta | None = None
    terminated: timedelta | None = None
    purge_interval: timedelta = timedelta(hours=1)

    @property
    def enabled(self) -> bool:
        """Whether any status has a retention, i.e. whether the purge runs at all."""
        return any(r is not None for r in (self.completed, self.failed, self.terminated))


@dataclass(frozen=True)
class HttpSettingsOptions:
    """Durable HTTP options (``extensions.durableTask.httpSettings``, Durable Functions' ``HttpOptions``)."""

    default_async_request_sleep_time_milliseconds: int = 30000
    """Wait between polls of a 202 answer's Location when it has no Retry-After header."""

    @property
    def default_async_request_sleep_time(self) -> timedelta:
        """:attr:`default_async_request_sleep_time_milliseconds` as a timedelta."""
        return timedelta(milliseconds=self.default_async_request_sleep_time_milliseconds)


def _default_concurrency() -> int:
    """Return the DF default for the max-concurrent-functions options: ten per core."""
    return 10 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class DurableTaskOptions:
    """Durable Functions options (``extensions.durableTask`` in host.json)."""

    hub_name: str
    storage_provider: StorageProviderOptions = field(default_factory=StorageProviderOptions)
    instance_retention: InstanceRetentionOptions = field(default_factory=InstanceRetentionOptions)
    http_settings: HttpSettingsOptions = field(default_factory=HttpSettingsOptions)
    max_concurrent_activity_functions: int = field(default_factory=_default_concurrency)
    max_concurrent_orchestrator_functions: int = field(default_factory=_default_concurrency)
    max_concurrent_entity_functions: int = field(default_factory=_default_concurrency)
    extended_sessions_enabled: bool = False
    extended_session_idle_timeout_in_seconds: int = 30
    store_inputs_in_orchestration_history: bool = False
    warm_continuation: bool = True
    """durable_ext's own ``warmContinuation``: an episode of an instance kept in memory continues its
    running orchestrator with the new events instead of replaying the whole history (replay.py)."""
    overridable_existing_instance_states: OverridableStates = OverridableStates.NON_RUNNING_STATES
    max_entity_operation_batch_size: int = 5000
    max_orchestration_actions: int = 100000
    default_version: str = ""
    """``defaultVersion``: the version of new instances, and the one this worker runs (versioning.py)."""
    version_match_strategy: VersionMatchStrategy = VersionMatchStrategy.CURRENT_OR_OLDER
    version_failure_strategy: VersionFailureStrategy = VersionFailureStrategy.REJECT

    @property
    def versioning(self) -> VersioningPolicy:
        """The versioning settings as one policy."""
        return VersioningPolicy(
            self.default_version, self.version_match_strategy, self.version_failure_strategy
        )


@dataclass(frozen=True)
class HostConfig:
    """Everything durable_ext needs to know about one Functions app directory."""

    app_dir: Path
    durable_task: DurableTaskOptions
    route_prefix: str = "api"
    functions: tuple[str, ...] | None = None
    """host.json's ``functions``: the only functions the host loads (None: all of them)."""
    # A read-only view; excluded from hashing because mapping proxies are unhashable.
    settings: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def storage_connection(self) -> StorageConnection:
        """The storage connection named by ``storage_provider.connection_name``, as the host resolves it.

        Like the WebJobs SDK, the name is looked up as ``AzureWebJobs<name>`` first, then as ``<name>``;
        under each, a non-empty setting of that name is a connection string and settings under
        ``<name>__`` (or ``<name>:``) are an identity-based connection. Raises :class:`ConfigError`
        naming the setting when neither exists.
        """
        name = self.durable_task.storage_provider.connection_name
        connection = find_storage_connection(self.settings, name)
        if connection is None:
            raise ConfigError(missing_connection_message(name) + _connection_hint(self.app_dir, name))
        return connection


def find_storage_connection(settings: Mapping[str, str], name: str) -> StorageConnection | None:
    """The storage connection app setting ``name`` defines, as the host resolves it, or None.

    Like the WebJobs SDK, the name is looked up as ``AzureWebJobs<name>`` first, then as ``<name>``;
    under each, a non-empty setting of that name is a connection string and settings under
    ``<name>__`` (or ``<name>:``) are an identity-based connection.
    """
    for candidate in (f"AzureWebJobs{name}", name):
        value = _lookup_setting(settings, candidate)
        if value:
            return StorageConnection(candidate, connection_string=value)
        identity = _setting_section(settings, candidate)
        if identity:
            return StorageConnection(candidate, identity=MappingProxyType(identity))
    return None


def missing_connection_message(name: str) -> str:
    """The error for a storage connection that no app setting defines."""
    return (
        f"App setting {name!r} (the storage connection string, or {name}__accountName and the other "
        "settings of an identity-based connection) is missing or empty"
    )


@dataclass(frozen=True)
class StorageConnection:
    """A storage connection as app settings define it: a connection string or an identity's settings."""

    name: str
    """The setting (or prefix of settings) it was found under."""
    connection_string: str | None = None
    identity: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """For an identity-based connection: its settings under ``<name>__``, keys lower-cased
    (``accountname``, ``queueserviceuri``, ``credential``, ``clientid``, ...)."""


def _setting_section(settings: Mapping[str, str], name: str) -> dict[str, str]:
    """The settings under ``name__`` or ``name:`` (the host's configuration section), keys lower-cased."""
    section = {}
    for key, value in settings.items():
        parts = _OVERRIDE_SEPARATOR_RE.split(key, maxsplit=1)
        if len(parts) == 2 and parts[0].lower() == name.lower() and value:
            section[parts[1].lower()] = value
    return section


def _connection_hint(app_dir: Path, name: str) -> str:
    """What to paste where to make app setting ``name`` point at Azurite (a first-run user's fix)."""
    setting = json.dumps({name: DEV_STORAGE_CONNECTION})[1:-1]
    path = app_dir / LOCAL_SETTINGS_JSON
    if path.is_file():
        return f'; for Azurite, add {setting} to "Values" in {path}'
    content = json.dumps({"IsEncrypted": False, "Values": {name: DEV_STORAGE_CONNECTION}})
    return f"; {path} does not exist: create it with {content} (or run `python -m durable_ext init`)"


def validate_hub_name(name: str) -> str:
    """Return ``name`` if it is a valid task hub name, else raise :class:`InvalidHubNameError`.

    A valid name has 3-45 characters, only ASCII letters and digits, and starts with a letter.
    """
    if MIN_HUB_NAME_LENGTH <= len(name) <= MAX_HUB_NAME_LENGTH and _HUB_NAME_RE.fullmatch(name):
        return name
    raise InvalidHubNameError(
        f"Task hub name {name!r} is invalid: it must have {MIN_HUB_NAME_LENGTH}-{MAX_HUB_NAME_LENGTH} "
        "characters, contain only ASCII letters and digits, and start with a letter"
    )


def parse_timespan(text: str) -> timedelta:
    """Parse a .NET TimeSpan string: ``hh:mm:ss``, ``d.hh:mm:ss``, each with an optional ``.fraction``.

    The fraction has up to seven digits (100 ns ticks) and is rounded to microseconds.  Raises
    :class:`ValueError` for anything else, including out-of-range hours, minutes or seconds.
    """
    match = _TIMESPAN_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expected a timespan like '00:05:00' or '1.02:03:04.5', got {text!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59:
        raise ValueError(f"hours, minutes or seconds out of range in timespan {text!r}")
    ticks = int((fraction or "0").ljust(7, "0"))
    return timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=round(ticks / 10),
    )


def load_local_settings(app_dir: Path) -> dict[str, str]:
    """Return the ``Values`` of ``app_dir/local.settings.json`` as strings ({} if the file is absent).

    Numbers and booleans are converted the way func core tools does (``true``/``false`` for booleans);
    null values are skipped, objects and arrays raise :class:`ConfigError`.
    """
    path = app_dir / LOCAL_SETTINGS_JSON
    data = _read_json_object(path)
    if data is None:
        return {}
    if data.get("IsEncrypted") is True:
        raise ConfigError(f"{path}: encrypted settings (IsEncrypted: true) are not supported")
    values = data.get("Values")
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: Values must be a JSON object, got {_json_type(values)}")
    result: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            result[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            result[key] = str(value)
        else:
            raise ConfigError(
                f"{path}: Values.{key} must be a string, number or boolean, not {_json_type(value)}"
            )
    return result


@dataclass(frozen=True)
class HostStartSettings:
    """Core Tools' own settings, the ``Host`` section of local.settings.json: ``start`` defaults."""

    local_http_port: int | None = None
    """``LocalHttpPort``: the port when ``--port`` is not given."""
    local_http_address: str | None = None
    """``LocalHttpAddress``: the address when ``--host`` is not given."""
    cors: str | None = None
    """``CORS``: comma-separated origins when ``--cors`` is not given."""
    cors_credentials: bool = False
    """``CORSCredentials``: allow credentials even without ``--cors-credentials``."""


def load_host_start_settings(app_dir: Path) -> HostStartSettings:
    """Read the ``Host`` section of ``app_dir/local.settings.json`` (defaults when absent).

    Keys ignore case, as Core Tools reads them; unknown keys are logged as warnings, wrong types are a
    :class:`ConfigError` naming the key.
    """
    path = app_dir / LOCAL_SETTINGS_JSON
    section = _subsection(_read_json_object(path) or {}, "Host", "Host", str(path))
    by_key = {spec.key.lower(): spec for spec in _HOST_START_FIELDS}
    values: dict[str, Any] = {}
    for key, value in section.items():
        spec = by_key.get(key.lower())
        if spec is None:
            logger.warning("Ignoring unknown key Host.%s in %s", key, path)
        elif value is not None:
            values[spec.attr] = _convert(spec, value, f"Host.{spec.key}", str(path))
    return HostStartSettings(**values)


def read_host_json(app_dir: Path) -> dict[str, Any] | None:
    """Return the decoded ``app_dir/host.json`` (None if absent); ConfigError if it cannot be read.

    Stricter than the Functions host in one point: a byte order mark is refused, because
    azure-functions-durable parses ``./host.json`` without expecting one when it is imported, and the
    import fails (in Azure too).
    """
    return _read_json_object(app_dir / HOST_JSON, allow_bom=False)


def load_config(
    app_dir: Path, environ: Mapping[str, str] | None = None, *, local_settings: bool = True
) -> HostConfig:
    """Load the configuration of the Functions app in ``app_dir``.

    Precedence, lowest first: defaults, ``host.json``, ``local.settings.json`` ``Values`` (unless
    ``local_settings`` is false: what a deployed app sees, as the file is not published), ``environ``
    (``os.environ`` when None).  Raises :class:`ConfigError` naming the key and the file or setting for
    any invalid value.
    """
    environ = os.environ if environ is None else environ
    host_path = app_dir / HOST_JSON
    local_path = app_dir / LOCAL_SETTINGS_JSON
    local_values = load_local_settings(app_dir) if local_settings else {}
    settings = MappingProxyType({**local_values, **environ})

    host = read_host_json(app_dir) or {}
    host_origin = str(host_path)
    extensions = _subsection(host, "extensions", "extensions", host_origin)
    durable_json = _subsection(extensions, "durableTask", _DURABLE_PATH, host_origin)
    storage_json = _subsection(durable_json, "storageProvider", _STORAGE_PATH, host_origin)
    retention_json = _subsection(durable_json, "instanceRetention", _RETENTION_PATH, host_origin)
    http_settings_json = _subsection(durable_json, "httpSettings", _HTTP_SETTINGS_PATH, host_origin)
    http_json = _subsection(extensions, "http", _HTTP_PATH, host_origin)
    _check_telemetry(local_values, environ, local_path)

    # Local values first so that the environment, applied later, wins key by key.
    sources = [(name, value, f"setting {name!r} in {local_path}") for name, value in local_values.items()]
    sources += [(name, value, f"environment variable {name!r}") for name, value in environ.items()]
    overrides = _collect_overrides(sources)

    durable = _read_section(
        durable_json, host_origin, overrides, _DURABLE_PATH, _DURABLE_FIELDS, warn_unknown=True
    )
    storage = _read_section(
        storage_json, host_origin, overrides, _STORAGE_PATH, _STORAGE_FIELDS, warn_unknown=True
    )
    retention = _read_section(
        retention_json, host_origin, overrides, _RETENTION_PATH, _RETENTION_FIELDS, warn_unknown=True
    )
    http = _read_section(http_json, host_origin, overrides, _HTTP_PATH, _HTTP_FIELDS, warn_unknown=False)
    _check_unimplemented_sections(durable_json, host_origin, overrides)
    _refuse_unknown_keys(
        http_settings_json, host_origin, overrides, _HTTP_SETTINGS_PATH, _HTTP_SETTINGS_FIELDS
    )
    http_settings = _read_section(
        http_settings_json,
        host_origin,
        overrides,
        _HTTP_SETTINGS_PATH,
        _HTTP_SETTINGS_FIELDS,
        warn_unknown=False,
    )

    _check_storage_provider(storage)
    _check_route_prefix(http)
    storage_options = StorageProviderOptions(**_attributes(storage))
    if storage_options.control_queue_batch_size > storage_options.control_queue_buffer_threshold:
        logger.warning(
            "%s.controlQueueBatchSize (%d) is larger than controlQueueBufferThreshold (%d); "
            "adjust them for predictable performance",
            _STORAGE_PATH,
            storage_options.control_queue_batch_size,
            storage_options.control_queue_buffer_threshold,
        )

    hub = durable.pop("hubName", None)
    hub_name = (
        _default_hub_name(settings) if hub is None or hub.value == "" else _resolve_hub_name(hub, settings)
    )
    durable_options = DurableTaskOptions(
        hub_name=hub_name,
        storage_provider=storage_options,
        instance_retention=InstanceRetentionOptions(**_attributes(retention)),
        http_settings=HttpSettingsOptions(**_attributes(http_settings)),
        **_attributes(durable),
    )
    config = HostConfig(
        app_dir=app_dir,
        durable_task=durable_options,
        settings=settings,
        functions=_function_allow_list(host, host_origin),
        **_attributes(http),
    )
    logger.debug("Loaded configuration of %s: %s", app_dir, durable_options)
    return config


def _function_allow_list(host: Mapping[str, Any], origin: str) -> tuple[str, ...] | None:
    """host.json's ``functions`` array (the host's allow list), or None when it has none."""
    names = get_ci(host, "functions")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise ConfigError(f"Invalid functions in {origin}: expected an array of function names")
    return tuple(names)


def _check_unimplemented_sections(
    durable_json: Mapping[str, Any], origin: str, overrides: Mapping[str, list[_Override]]
) -> None:
    """Read the sections of Durable Functions settings durable_ext does not implement.

    Nothing of them is stored: reading converts every value, which refuses anything but the Durable
    Functions default (:class:`_OnlyDefault`).
    """
    tracing = _subsection(durable_json, "tracing", _TRACING_PATH, origin)
    _check_distributed_tracing(
        _read_section(tracing, origin, overrides, _TRACING_PATH, _TRACING_FIELDS, warn_unknown=True)
    )
    lease = _subsection(durable_json, "appLeaseOptions", _APP_LEASE_PATH, origin)
    _read_section(lease, origin, overrides, _APP_LEASE_PATH, _APP_LEASE_FIELDS, warn_unknown=True)
    notifications = _subsection(durable_json, "notifications", _NOTIFICATIONS_PATH, origin)
    _read_section(notifications, origin, overrides, _NOTIFICATIONS_PATH, (), warn_unknown=True)
    event_grid = _subsection(notifications, "eventGrid", _EVENT_GRID_PATH, origin)
    _read_section(event_grid, origin, overrides, _EVENT_GRID_PATH, _EVENT_GRID_FIELDS, warn_unknown=True)


_TRACING_PROTOCOLS = ("HttpCorrelationProtocol", "W3CTraceContext")


def _check_distributed_tracing(values: Mapping[str, _Value]) -> None:
    """Accept ``tracing.distributedTracingEnabled`` with ``version`` V2 only.

    V2 is DurableTask.Core's W3C trace context in the history events and queue messages, which
    durable_ext carries and exports through OpenTelemetry. V1 (Durable Functions' default) is the older
    correlation protocol of the Application Insights SDK, which it does not implement. As in Durable
    Functions, ``version`` and ``distributedTracingProtocol`` are read only when tracing is enabled,
    and V2 always speaks W3C trace context, whatever the protocol says.
    """
    enabled = values.get("distributedTracingEnabled")
    if enabled is None or not enabled.value:
        return
    protocol = values.get("distributedTracingProtocol")
    if protocol is not None and protocol.value not in _TRACING_PROTOCOLS:
        raise ConfigError(
            f"Invalid {protocol.dotted} in {protocol.origin}: {protocol.value!r} is not one of "
            f"{', '.join(_TRACING_PROTOCOLS)}"
        )
    version = values.get("version")
    if version is None or str(version.value).upper() != "V2":
        written = (
            f"{version.dotted} = {json.dumps(version.value)} in {version.origin}"
            if version is not None
            else f"{enabled.dotted} = true in {enabled.origin} without tracing.version"
        )
        raise ConfigError(
            f"Unsupported {written}: durable_ext implements distributed tracing V2 (W3C trace context, "
            'exported through OpenTelemetry, see README "Tracing"), not V1, the Application Insights '
            'correlation protocol Durable Functions uses by default; set tracing.version to "V2"'
        )


TELEMETRY_SETTINGS = ("APPLICATIONINSIGHTS_CONNECTION_STRING", "APPINSIGHTS_INSTRUMENTATIONKEY")
"""App settings that turn on telemetry to Application Insights under the Functions host."""


def _check_telemetry(local_values: Mapping[str, str], environ: Mapping[str, str], local_path: Path) -> None:
    """Refuse the app settings that would send telemetry to Application Insights, which durable_ext
    cannot do; the host.json ``logging.applicationInsights`` section only tunes that telemetry
    (sampling, live metrics), so it is accepted as it is."""
    for name in TELEMETRY_SETTINGS:
        for values, origin in ((environ, "environment variable"), (local_values, f"setting in {local_path}")):
            if _lookup_setting(values, name):
                raise ConfigError(
                    f"App setting {name} ({origin}) is set, but durable_ext cannot send telemetry to "
                    "Application Insights: remove it to run here, and export OpenTelemetry traces with "
                    "OTEL_TRACES_EXPORTER instead (README, Tracing)"
                )


# --- field tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OnlyDefault:
    """A Durable Functions setting durable_ext does not implement: only its default is accepted.

    Any other value stops ``start`` (every command that reads the configuration) with one line naming
    the key, its file and ``why``, rather than being silently ignored.
    """

    accepts: Callable[[Any], bool]
    default: str
    """The default as host.json spells it, for the message."""
    why: str


def _equals(default: object) -> Callable[[Any], bool]:
    """Accept exactly ``default``."""
    return lambda value: value == default


def _is_blank(value: Any) -> bool:
    """Accept an absent value: the empty string."""
    return not value


@dataclass(frozen=True)
class _Field:
    """How one host.json key maps onto a dataclass attribute.

    ``attr`` is empty for keys that are validated but not stored.  ``low``/``high`` are inclusive bounds
    of the same type as ``kind``.
    """

    key: str
    attr: str
    kind: type[Any]
    low: Any = None
    high: Any = None
    aliases: tuple[str, ...] = ()
    only_default: _OnlyDefault | None = None


@dataclass(frozen=True)
class _Value:
    """A converted value together with where it came from, for later error messages."""

    value: Any
    dotted: str
    origin: str


_DURABLE_PATH = "extensions.durableTask"
_STORAGE_PATH = "extensions.durableTask.storageProvider"
_RETENTION_PATH = "extensions.durableTask.instanceRetention"
_HTTP_PATH = "extensions.http"
_TRACING_PATH = "extensions.durableTask.tracing"
_APP_LEASE_PATH = "extensions.durableTask.appLeaseOptions"
_NOTIFICATIONS_PATH = "extensions.durableTask.notifications"
_EVENT_GRID_PATH = "extensions.durableTask.notifications.eventGrid"

_NO_APP_LEASE = (
    "durable_ext takes no app lease: workers share the task hub through the partition leases alone"
)
_NO_TRACKING_EVENTS = (
    "durable_ext does not write Durable Functions' tracking events (Application Insights telemetry); "
    "its own log lines go to the console"
)
_HTTP_SETTINGS_PATH = "extensions.durableTask.httpSettings"

_DURABLE_FIELDS = (
    _Field("hubName", "", str),
    _Field("maxConcurrentActivityFunctions", "max_concurrent_activity_functions", int, 1),
    _Field("maxConcurrentOrchestratorFunctions", "max_concurrent_orchestrator_functions", int, 1),
    _Field("maxConcurrentEntityFunctions", "max_concurrent_entity_functions", int, 1),
    _Field("extendedSessionsEnabled", "extended_sessions_enabled", bool),
    _Field("extendedSessionIdleTimeoutInSeconds", "extended_session_idle_timeout_in_seconds", int, 0),
    _Field("storeInputsInOrchestrationHistory", "store_inputs_in_orchestration_history", bool),
    _Field("warmContinuation", "warm_continuation", bool),
    _Field("overridableExistingInstanceStates", "overridable_existing_instance_states", OverridableStates),
    _Field("maxEntityOperationBatchSize", "max_entity_operation_batch_size", int, 1),
    _Field("maxOrchestrationActions", "max_orchestration_actions", int, 1),
    # Validated, not stored: the host always shuts down gracefully (README's table).
    _Field("useGracefulShutdown", "", bool),
    _Field("defaultVersion", "default_version", str),
    _Field("versionMatchStrategy", "version_match_strategy", VersionMatchStrategy),
    _Field("versionFailureStrategy", "version_failure_strategy", VersionFailureStrategy),
    # Either value is what durable_ext does: it never takes the app lease (see _NO_APP_LEASE).
    _Field("useAppLease", "", bool),
    _Field(
        "localRpcEndpointEnabled",
        "",
        bool,
        only_default=_OnlyDefault(
            _equals(True),
            "true",
            "the df client always calls durable_ext's management API, standing in for the local RPC endpoint",
        ),
    ),
    _Field(
        "entityMessageReorderWindowInMinutes",
        "",
        int,
        0,
        only_default=_OnlyDefault(
            _equals(30), "30", "durable_ext's entity message de-duplication window is not configurable"
        ),
    ),
    _Field(
        "rollbackEntityOperationsOnExceptions",
        "",
        bool,
        only_default=_OnlyDefault(
            _equals(True),
            "true",
            "azure-functions-durable runs entity batches itself; this switch is not implemented",
        ),
    ),
    _Field(
        "throwStatusExceptionsOnRaiseEvent",
        "",
        bool,
        only_default=_OnlyDefault(
            _equals(False),
            "false",
            "raising an event to an ended instance always answers 410, as the management API does",
        ),
    ),
)

_STORAGE_FIELDS = (
    _Field("connectionName", "connection_name", str, aliases=("connectionStringName",)),
    _Field("partitionCount", "partition_count", int, 1, 16),
    _Field("controlQueueBatchSize", "control_queue_batch_size", int, 1, 32),
    _Field("controlQueueBufferThreshold", "control_queue_buffer_threshold", int, 1, 1000),
    _Field(
        "controlQueueVisibilityTimeout",
        "control_queue_visibility_timeout",
        timedelta,
        timedelta(minutes=1),
        timedelta(minutes=60),
    ),
    # Azure Queue storage refuses visibility timeouts above seven days.
    _Field(
        "workItemQueueVisibilityTimeout",
        "work_item_queue_visibility_timeout",
        timedelta,
        timedelta(seconds=1),
        timedelta(days=7),
    ),
    _Field("maxQueuePollingInterval", "max_queue_polling_interval", timedelta, timedelta(milliseconds=50)),
    _Field("allowReplayingTerminalInstances", "allow_replaying_terminal_instances", bool),
    _Field(
        "useTablePartitionManagement",
        "",
        bool,
        only_default=_OnlyDefault(
            _equals(True), "true", "durable_ext implements only the table partition manager"
        ),
    ),
    _Field(
        "fetchLargeMessagesAutomatically",
        "",
        bool,
        only_default=_OnlyDefault(
            _equals(True),
            "true",
            "status queries always return the contents of large inputs and outputs, not their blob URLs",
        ),
    ),
    # Validated so typos fail loudly, then checked by _check_storage_provider.
    _Field("type", "", str),
    _Field(
        "useLegacyPartitionManagement",
        "",
        bool,
        only_default=_OnlyDefault(
            _equals(False), "false", "durable_ext implements only the table partition manager"
        ),
    ),
    _Field(
        "trackingStoreConnectionName",
        "",
        str,
        aliases=("trackingStoreConnectionStringName",),
        only_default=_OnlyDefault(
            _is_blank, "an empty string", "History and Instances always stay in the main storage account"
        ),
    ),
    _Field(
        "trackingStoreNamePrefix",
        "",
        str,
        only_default=_OnlyDefault(
            _is_blank,
            "an empty string",
            "the History and Instances tables are always {hub}History and {hub}Instances",
        ),
    ),
    _Field(
        "queueClientMessageEncoding",
        "",
        str,
        only_default=_OnlyDefault(
            lambda value: value.lower() == "utf8",
            '"UTF8"',
            "durable_ext writes queue messages as UTF-8 JSON (it reads base64 ones too)",
        ),
    ),
)

# Durable Functions' own telemetry: off by default, and durable_ext has none of it.
_TRACING_FIELDS = (
    _Field(
        "traceInputsAndOutputs",
        "",
        bool,
        only_default=_OnlyDefault(_equals(False), "false", _NO_TRACKING_EVENTS),
    ),
    _Field(
        "traceReplayEvents", "", bool, only_default=_OnlyDefault(_equals(False), "false", _NO_TRACKING_EVENTS)
    ),
    _Field(
        "allowVerboseLinuxTelemetry",
        "",
        bool,
        only_default=_OnlyDefault(_equals(False), "false", _NO_TRACKING_EVENTS),
    ),
    # Distributed tracing is checked as a whole (_check_distributed_tracing); spans are exported when
    # the OTEL_* variables name an exporter (durable_ext/tracing.py).
    _Field("distributedTracingEnabled", "", bool),
    _Field("distributedTracingProtocol", "", str),
    _Field("version", "", str),
)

_APP_LEASE_FIELDS = (
    _Field(
        "renewInterval",
        "",
        timedelta,
        only_default=_OnlyDefault(_equals(timedelta(seconds=25)), '"00:00:25"', _NO_APP_LEASE),
    ),
    _Field(
        "acquireInterval",
        "",
        timedelta,
        only_default=_OnlyDefault(_equals(timedelta(minutes=5)), '"00:05:00"', _NO_APP_LEASE),
    ),
    _Field(
        "leaseInterval",
        "",
        timedelta,
        only_default=_OnlyDefault(_equals(timedelta(minutes=1)), '"00:01:00"', _NO_APP_LEASE),
    ),
)

_EVENT_GRID_FIELDS = (
    _Field(
        "topicEndpoint",
        "",
        str,
        only_default=_OnlyDefault(
            _is_blank, "an empty string", "publishing lifecycle events to Event Grid is not supported"
        ),
    ),
)

_RETENTION_FIELDS = (
    _Field("completed", "completed", timedelta, timedelta(0)),
    _Field("failed", "failed", timedelta, timedelta(0)),
    _Field("terminated", "terminated", timedelta, timedelta(0)),
    _Field("purgeInterval", "purge_interval", timedelta, timedelta(seconds=1)),
)

_HTTP_FIELDS = (_Field("routePrefix", "route_prefix", str),)

# Durable Functions' HttpOptions has this one setting; anything else is refused, not ignored.
_HTTP_SETTINGS_FIELDS = (
    _Field(
        "defaultAsyncRequestSleepTimeMilliseconds",
        "default_async_request_sleep_time_milliseconds",
        int,
        0,
        2**31 - 1,
    ),
)

# Core Tools' own settings in local.settings.json's Host section.
_HOST_START_FIELDS = (
    _Field("LocalHttpPort", "local_http_port", int, 1, 65535),
    _Field("LocalHttpAddress", "local_http_address", str),
    _Field("CORS", "cors", str),
    _Field("CORSCredentials", "cors_credentials", bool),
)

_SUBSECTION_PATHS = {
    ("storageprovider",): _STORAGE_PATH,
    ("instanceretention",): _RETENTION_PATH,
    ("tracing",): _TRACING_PATH,
    ("appleaseoptions",): _APP_LEASE_PATH,
    ("notifications",): _NOTIFICATIONS_PATH,
    ("notifications", "eventgrid"): _EVENT_GRID_PATH,
    ("httpsettings",): _HTTP_SETTINGS_PATH,
}
"""Sections inside ``extensions.durableTask``, by the lower-cased names an override spells them with."""

# Keys that are not settings of their own section: subsections read separately (httpSettings among
# them), and Event Grid's publishing options, which do nothing without a
# topicEndpoint (refused), in Durable Functions too.
_IGNORED_KEYS = {
    _DURABLE_PATH: frozenset(
        key.lower()
        for key in (
            "storageProvider",
            "instanceRetention",
            "tracing",
            "notifications",
            "appLeaseOptions",
            "httpSettings",
        )
    ),
    _NOTIFICATIONS_PATH: frozenset(("eventgrid",)),
    _EVENT_GRID_PATH: frozenset(
        key.lower()
        for key in (
            "keySettingName",
            "publishRetryCount",
            "publishRetryInterval",
            "publishRetryHttpStatus",
            "publishEventTypes",
        )
    ),
}

_KIND_NAMES: dict[type[Any], str] = {
    bool: "a boolean (true or false)",
    int: "an integer",
    str: "a string",
    timedelta: "a timespan string such as '00:05:00'",
}


def _kind_name(kind: type[Any]) -> str:
    """How a value of ``kind`` must look, for error messages."""
    if issubclass(kind, enum.Enum):
        return "one of " + ", ".join(repr(member.value) for member in kind)
    return _KIND_NAMES[kind]


# --- helpers ------------------------------------------------------------------------------------------


def _json_type(value: object) -> str:
    """Name the JSON type of a decoded value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


_MINIMAL_HOST_JSON = '{"version": "2.0"}'
_UTF8_BOM = b"\xef\xbb\xbf"


def _read_json_object(path: Path, *, allow_bom: bool = True) -> dict[str, Any] | None:
    """Decode a JSON file whose top level must be an object; None if the file does not exist.

    ``allow_bom`` tolerates a UTF-8 byte order mark, which Windows editors like to write and the
    Functions host accepts.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file: {exc}") from exc
    if raw.startswith(_UTF8_BOM) and not allow_bom:
        raise ConfigError(
            f"{path} starts with a UTF-8 byte order mark, which azure-functions-durable cannot read (it"
            " fails when imported, in Azure too): save the file as UTF-8 without BOM"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): save it as UTF-8"
        ) from None
    if not text.strip():
        raise ConfigError(f"{path} is empty: it must hold a JSON object, at least {_MINIMAL_HOST_JSON}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object, not {_json_type(data)}")
    return data


def get_ci(obj: Mapping[str, Any], key: str) -> Any:
    """Look a key up case-insensitively, like the Functions host; the last spelling wins."""
    found = None
    for candidate, value in obj.items():
        if candidate.lower() == key.lower():
            found = value
    return found


def _subsection(obj: Mapping[str, Any], key: str, dotted: str, origin: str) -> dict[str, Any]:
    """Return the object under ``key`` ({} if absent or null); anything else is a ConfigError."""
    value = get_ci(obj, key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"Invalid {dotted} in {origin}: expected an object, got {_json_type(value)}")
    return value


def _lookup_setting(settings: Mapping[str, str], name: str) -> str | None:
    """Find an app setting, exactly first and then case-insensitively (Windows and the host ignore case)."""
    if name in settings:
        return settings[name]
    folded = name.lower()
    return next((value for key, value in settings.items() if key.lower() == folded), None)


_Override = tuple[str, str, str]  # (key as written, value, origin)


def _collect_overrides(sources: list[tuple[str, str, str]]) -> dict[str, list[_Override]]:
    """Sort ``AzureFunctionsJobHost__…`` settings by the dotted section they override.

    Returns section path -> overrides in precedence order.  Deeper paths keep their ``__`` (e.g.
    ``tracing__traceReplayEvents``): they match no scalar field, and the section decides by the first
    segment whether they are known.
    """
    result: dict[str, list[_Override]] = {}
    for name, value, origin in sources:
        parts = _OVERRIDE_SEPARATOR_RE.split(name)
        if len(parts) < 4 or parts[0].lower() != OVERRIDE_PREFIX.lower() or parts[1].lower() != "extensions":
            continue
        section, rest = parts[2].lower(), parts[3:]
        if section == "durabletask":
            path, key = _durable_override_section(rest)
            result.setdefault(path, []).append((key, value, origin))
        elif section == "http":
            result.setdefault(_HTTP_PATH, []).append(("__".join(rest), value, origin))
    return result


def _durable_override_section(rest: list[str]) -> tuple[str, str]:
    """The section an override of ``extensions.durableTask`` (path ``rest`` below it) belongs to, and
    its key there: the deepest known section the path runs through."""
    lowered = tuple(part.lower() for part in rest)
    for depth in range(len(rest) - 1, 0, -1):
        path = _SUBSECTION_PATHS.get(lowered[:depth])
        if path is not None:
            return path, "__".join(rest[depth:])
    return _DURABLE_PATH, "__".join(rest)


def _read_section(
    obj: Mapping[str, Any],
    host_origin: str,
    overrides: Mapping[str, list[_Override]],
    path: str,
    fields: tuple[_Field, ...],
    *,
    warn_unknown: bool,
) -> dict[str, _Value]:
    """Merge one host.json section with its overrides and convert every known key.

    Returns canonical key -> converted value.  Unknown keys are logged (when ``warn_unknown``) and dropped.
    """
    by_name: dict[str, _Field] = {}
    for spec in fields:
        for name in (spec.key, *spec.aliases):
            by_name[name.lower()] = spec
    ignored = _IGNORED_KEYS.get(path, frozenset())

    merged: dict[str, tuple[str, object, str]] = {}
    entries = [(key, value, host_origin) for key, value in obj.items()] + overrides.get(path, [])
    for key, value, origin in entries:
        known = by_name.get(key.lower())
        if known is not None:
            # Aliases share one slot so a later source replaces an earlier one whichever spelling it uses.
            merged[known.key] = (key, value, origin)
        elif key.lower().split("__")[0] not in ignored and warn_unknown:
            logger.warning("Ignoring unknown key %s.%s in %s", path, key, origin)

    result: dict[str, _Value] = {}
    for spec in fields:
        if spec.key in merged:
            written, value, origin = merged[spec.key]
            # Name the key in its canonical case unless the user wrote an alias.
            name = next((a for a in spec.aliases if a.lower() == written.lower()), spec.key)
            dotted = f"{path}.{name}"
            result[spec.key] = _Value(_convert(spec, value, dotted, origin), dotted, origin)
    return result


def _refuse_unknown_keys(
    obj: Mapping[str, Any],
    host_origin: str,
    overrides: Mapping[str, list[_Override]],
    path: str,
    fields: tuple[_Field, ...],
) -> None:
    """ConfigError for a key of section ``path`` that none of ``fields`` reads: for sections whose
    settings change behaviour, where a silently dropped key would do something else than asked."""
    known = {name.lower() for spec in fields for name in (spec.key, *spec.aliases)}
    entries = [(key, host_origin) for key in obj] + [
        (key, origin) for key, _, origin in overrides.get(path, [])
    ]
    for key, origin in entries:
        if key.lower() not in known:
            supported = ", ".join(spec.key for spec in fields)
            raise ConfigError(f"Unsupported key {path}.{key} in {origin}: durable_ext supports {supported}")


def _parse_text(kind: type[Any], text: str) -> Any:
    """Convert a setting string to ``kind`` the way .NET configuration binding does; ValueError if not."""
    if kind is bool:
        if text.strip().lower() in ("true", "false"):
            return text.strip().lower() == "true"
    elif kind is int:
        if _INT_RE.fullmatch(text.strip()):
            return int(text)
    elif kind is timedelta:
        return parse_timespan(text)
    elif issubclass(kind, enum.Enum):
        # Enum values ignore case, as .NET configuration binding reads them.
        for member in kind:
            if member.value.lower() == text.strip().lower():
                return member
    else:
        return text
    raise ValueError(f"expected {_kind_name(kind)}, got {text!r}")


def _convert(spec: _Field, value: object, dotted: str, origin: str) -> Any:
    """Convert a JSON or setting value for ``spec``; ConfigError naming ``dotted`` and ``origin`` if bad."""
    try:
        # Strings are accepted for every kind because the host reads host.json through .NET
        # configuration, where all values are strings: "partitionCount": "8" works there too.
        if isinstance(value, str):
            result = _parse_text(spec.kind, value)
        elif type(value) is spec.kind and spec.kind in (bool, int):  # type() so that true is not an int
            result = value
        else:
            raise ValueError(f"expected {_kind_name(spec.kind)}, got {_json_type(value)} {value!r}")
    except ValueError as exc:
        raise ConfigError(f"Invalid {dotted} in {origin}: {exc}") from None
    if (spec.low is not None and result < spec.low) or (spec.high is not None and result > spec.high):
        bounds = f"between {spec.low} and {spec.high}" if spec.high is not None else f"at least {spec.low}"
        raise ConfigError(f"Invalid {dotted} in {origin}: must be {bounds}, got {result}")
    rule = spec.only_default
    if rule is not None and not rule.accepts(result):
        raise ConfigError(
            f"Unsupported {dotted} = {json.dumps(value)} in {origin}: {rule.why}; remove it or set it to "
            f"the Durable Functions default, {rule.default}"
        )
    return result


def _attributes(values: Mapping[str, _Value]) -> dict[str, Any]:
    """Map converted section values to dataclass keyword arguments, skipping unstored keys."""
    by_key = {
        spec.key: spec.attr
        for spec in (
            *_DURABLE_FIELDS,
            *_STORAGE_FIELDS,
            *_RETENTION_FIELDS,
            *_HTTP_FIELDS,
            *_HTTP_SETTINGS_FIELDS,
        )
    }
    return {by_key[key]: item.value for key, item in values.items() if by_key[key]}


def _check_storage_provider(storage: Mapping[str, _Value]) -> None:
    """Reject other providers and an empty connection name."""
    provider = storage.get("type")
    if provider is not None and provider.value.lower() not in ("azurestorage", "azure_storage"):
        raise ConfigError(
            f"Invalid {provider.dotted} in {provider.origin}: only the Azure Storage provider is supported, "
            f"got {provider.value!r}"
        )
    connection = storage.get("connectionName")
    if connection is not None and not connection.value:
        raise ConfigError(f"Invalid {connection.dotted} in {connection.origin}: must not be empty")


def _check_route_prefix(http: Mapping[str, _Value]) -> None:
    """Refuse a routePrefix at or under the management API: its routes would hide every function."""
    prefix = http.get("routePrefix")
    if prefix is None:
        return
    segments = [segment.lower() for segment in prefix.value.split("/") if segment]
    reserved = MANAGEMENT_ROUTE.split("/")
    if segments[: len(reserved)] == reserved:
        raise ConfigError(
            f"Invalid {prefix.dotted} in {prefix.origin}: {prefix.value!r} is under /{MANAGEMENT_ROUTE}, "
            "where the Durable Functions management API answers; the functions could never be reached"
        )


def _resolve_hub_name(hub: _Value, settings: Mapping[str, str]) -> str:
    """Replace ``%Setting%`` references in an explicit hub name, then validate it."""

    def substitute(match: re.Match[str]) -> str:
        value = _lookup_setting(settings, match.group(1))
        if value is None:
            raise ConfigError(
                f"Invalid {hub.dotted} in {hub.origin}: app setting {match.group(1)!r} referenced as "
                f"{match.group(0)!r} is not set"
            )
        return value

    name = _SETTING_REF_RE.sub(substitute, hub.value)
    try:
        return validate_hub_name(name)
    except InvalidHubNameError as exc:
        raise InvalidHubNameError(f"Invalid {hub.dotted} in {hub.origin}: {exc}") from None


def _default_hub_name(settings: Mapping[str, str]) -> str:
    """Derive the hub name from ``WEBSITE_SITE_NAME`` as the DF extension does, else ``TestHubName``."""
    site = _lookup_setting(settings, "WEBSITE_SITE_NAME")
    if not site:
        return DEFAULT_HUB_NAME
    # ASCII only, unlike .NET's char.IsLetterOrDigit, because validate_hub_name only accepts ASCII.
    sanitized = "".join(ch for ch in site if ch.isascii() and ch.isalnum())
    if not sanitized:
        return "DefaultTaskHub"  # what AzureStorageOptions.IsSanitizedHubName returns here
    if sanitized[0].isdigit():
        sanitized = "t" + sanitized
    sanitized = sanitized[:MAX_HUB_NAME_LENGTH]
    if len(sanitized) < MIN_HUB_NAME_LENGTH:
        sanitized += "Hub"
    return sanitized


# --- AzureWebJobs.<FunctionName>.Disabled --------------------------------------------------------------

# The WebJobs SDK reads "AzureWebJobs.<name>.Disabled", and "AzureWebJobs_<name>_Disabled" for
# environments that do not allow dots in variable names.
_DISABLED_SETTING_RE = re.compile(r"AzureWebJobs([._])(.+)\1Disabled", re.IGNORECASE)
_DISABLED_FALSE_VALUES = frozenset({"", "0", "false"})


@dataclass(frozen=True)
class DisabledSetting:
    """One ``AzureWebJobs.<FunctionName>.Disabled`` app setting."""

    setting: str
    """The setting's name as written."""
    function_name: str
    value: str

    @property
    def disables(self) -> bool:
        """Whether the function is disabled: "true" or "1", ignoring case, as the WebJobs SDK's
        ``IsSettingEnabled`` reads it; any other value leaves it enabled."""
        return self.value.strip().lower() in ("true", "1")

    @property
    def unclear(self) -> bool:
        """The value is neither a recognised true nor a recognised false: likely a typo."""
        return not self.disables and self.value.strip().lower() not in _DISABLED_FALSE_VALUES


def disabled_settings(settings: Mapping[str, str]) -> list[DisabledSetting]:
    """Every ``AzureWebJobs.<FunctionName>.Disabled`` (or ``AzureWebJobs_<FunctionName>_Disabled``)
    app setting in ``settings``, in their order."""
    found: list[DisabledSetting] = []
    for name, value in settings.items():
        match = _DISABLED_SETTING_RE.fullmatch(name)
        if match is not None:
            found.append(DisabledSetting(name, match.group(2), value))
    return found


# --- logging.logLevel --------------------------------------------------------------------------------

LOG_LEVEL_NONE = logging.CRITICAL + 10
"""The Functions log level ``None``: above every record's level, so nothing passes."""
LOG_LEVELS: Mapping[str, int] = MappingProxyType(
    {
        "trace": logging.DEBUG - 5,
        "debug": logging.DEBUG,
        "information": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "critical": logging.CRITICAL,
        "none": LOG_LEVEL_NONE,
    }
)
"""The Functions (.NET ``LogLevel``) names, lower-cased, as Python logging levels (Trace below Debug)."""
_LOG_LEVEL_PATH = "logging.logLevel"


def load_log_levels(app_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """host.json's ``logging.logLevel``: category (``default``, ``Function``, ``Function.<name>``,
    ``Host.…``) -> Python logging level.

    ``AzureFunctionsJobHost__logging__logLevel__<category>`` in local.settings.json ``Values`` or
    ``environ`` (``os.environ`` when None) overrides a category, later sources winning. Level names are
    the Functions ones, in any case. Raises :class:`ConfigError` naming the category, the file or
    setting, and the valid names for anything else.
    """
    environ = os.environ if environ is None else environ
    origin = str(app_dir / HOST_JSON)
    section = _subsection(
        _subsection(read_host_json(app_dir) or {}, "logging", "logging", origin),
        "logLevel",
        _LOG_LEVEL_PATH,
        origin,
    )
    entries = [(category, value, origin) for category, value in section.items()]
    local_path = app_dir / LOCAL_SETTINGS_JSON
    sources = [(n, v, f"setting {n!r} in {local_path}") for n, v in load_local_settings(app_dir).items()]
    for name, value, source in [
        *sources,
        *((n, v, f"environment variable {n!r}") for n, v in environ.items()),
    ]:
        parts = _OVERRIDE_SEPARATOR_RE.split(name, maxsplit=3)
        if len(parts) == 4 and [p.lower() for p in parts[:3]] == [
            OVERRIDE_PREFIX.lower(),
            "logging",
            "loglevel",
        ]:
            entries.append((parts[3], value, source))
    levels: dict[str, int] = {}
    for category, value, source in entries:
        level = LOG_LEVELS.get(value.strip().lower()) if isinstance(value, str) else None
        if level is None:
            names = ", ".join(name.capitalize() for name in LOG_LEVELS)
            raise ConfigError(
                f"Invalid {_LOG_LEVEL_PATH}.{category} in {source}: {json.dumps(value)} is not a log level"
                f" (use one of {names})"
            )
        # Categories compare ignoring case, as .NET's logger filter rules do; the last source wins.
        levels = {key: old for key, old in levels.items() if key.lower() != category.lower()}
        levels[category] = level
    return levels
