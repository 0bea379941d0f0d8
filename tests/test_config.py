"""Tests of durable_ext.config: host.json, local.settings.json and environment overrides."""

from __future__ import annotations

import json
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from durable_ext.config import (
    DurableTaskOptions,
    HostConfig,
    HostStartSettings,
    OverridableStates,
    StorageConnection,
    StorageProviderOptions,
    load_config,
    load_host_start_settings,
    load_local_settings,
    parse_timespan,
    read_host_json,
    validate_hub_name,
)
from durable_ext.errors import ConfigError, InvalidHubNameError
from durable_ext.versioning import VersionFailureStrategy, VersionMatchStrategy

PREFIX = "AzureFunctionsJobHost__extensions__durableTask__"
SP_PREFIX = PREFIX + "storageProvider__"


def write_app(tmp_path: Path, host: Any = None, local: Any = None) -> Path:
    """Write host.json / local.settings.json (dicts as JSON, strings verbatim) and return the app dir."""
    for name, content in (("host.json", host), ("local.settings.json", local)):
        if content is not None:
            text = content if isinstance(content, str) else json.dumps(content, indent=2)
            (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def durable_host(durable: dict[str, Any]) -> dict[str, Any]:
    """Wrap an extensions.durableTask section in a host.json document."""
    return {"version": "2.0", "extensions": {"durableTask": durable}}


def storage_host(storage: dict[str, Any]) -> dict[str, Any]:
    """Wrap an extensions.durableTask.storageProvider section in a host.json document."""
    return durable_host({"storageProvider": storage})


def local_values(values: dict[str, Any]) -> dict[str, Any]:
    """Wrap app settings in a local.settings.json document."""
    return {"IsEncrypted": False, "Values": values}


def test_defaults_without_any_file(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={})
    cores = 10 * (os.cpu_count() or 1)
    assert config == HostConfig(
        app_dir=tmp_path,
        durable_task=DurableTaskOptions(
            hub_name="TestHubName",
            storage_provider=StorageProviderOptions(),
            max_concurrent_activity_functions=cores,
            max_concurrent_orchestrator_functions=cores,
            max_concurrent_entity_functions=cores,
        ),
        route_prefix="api",
        settings={},
    )
    sp = config.durable_task.storage_provider
    assert (sp.connection_name, sp.partition_count, sp.control_queue_batch_size) == (
        "AzureWebJobsStorage",
        4,
        32,
    )
    assert sp.control_queue_buffer_threshold == 256
    assert (
        sp.control_queue_visibility_timeout == sp.work_item_queue_visibility_timeout == timedelta(minutes=5)
    )
    assert sp.max_queue_polling_interval == timedelta(seconds=30)
    assert not sp.allow_replaying_terminal_instances
    dt = config.durable_task
    assert not dt.extended_sessions_enabled and dt.extended_session_idle_timeout_in_seconds == 30
    assert dt.overridable_existing_instance_states is OverridableStates.NON_RUNNING_STATES
    assert (dt.max_entity_operation_batch_size, dt.max_orchestration_actions) == (5000, 100000)
    assert not dt.store_inputs_in_orchestration_history
    assert dt.default_version == ""
    assert dt.version_match_strategy is VersionMatchStrategy.CURRENT_OR_OLDER
    assert dt.version_failure_strategy is VersionFailureStrategy.REJECT


def test_host_json_without_extensions_gives_defaults(tmp_path: Path) -> None:
    app = write_app(tmp_path, host={"version": "2.0", "logging": {"logLevel": {"default": "Debug"}}})
    assert load_config(app, environ={}).durable_task.storage_provider == StorageProviderOptions()


def test_every_option_from_host_json(tmp_path: Path) -> None:
    host = {
        "version": "2.0",
        "extensions": {
            "http": {"routePrefix": "custom"},
            "durableTask": {
                "hubName": "MyHub",
                "maxConcurrentActivityFunctions": 3,
                "maxConcurrentOrchestratorFunctions": 4,
                "maxConcurrentEntityFunctions": 5,
                "extendedSessionsEnabled": True,
                "extendedSessionIdleTimeoutInSeconds": 60,
                "storeInputsInOrchestrationHistory": True,
                "warmContinuation": False,
                "overridableExistingInstanceStates": "AnyState",
                "maxEntityOperationBatchSize": 50,
                "maxOrchestrationActions": 1000,
                "useGracefulShutdown": True,
                "useAppLease": False,
                "defaultVersion": "2.0",
                "versionMatchStrategy": "Strict",
                "versionFailureStrategy": "Fail",
                "storageProvider": {
                    "connectionName": "MyStorage",
                    "partitionCount": 16,
                    "controlQueueBatchSize": 8,
                    "controlQueueBufferThreshold": 1000,
                    "controlQueueVisibilityTimeout": "00:10:00",
                    "workItemQueueVisibilityTimeout": "1.00:00:00",
                    "maxQueuePollingInterval": "00:00:00.05",
                    "allowReplayingTerminalInstances": True,
                    "useTablePartitionManagement": True,
                    "fetchLargeMessagesAutomatically": True,
                },
            },
        },
    }
    config = load_config(write_app(tmp_path, host=host), environ={})
    assert config.route_prefix == "custom"
    assert config.durable_task == DurableTaskOptions(
        hub_name="MyHub",
        storage_provider=StorageProviderOptions(
            connection_name="MyStorage",
            partition_count=16,
            control_queue_batch_size=8,
            control_queue_buffer_threshold=1000,
            control_queue_visibility_timeout=timedelta(minutes=10),
            work_item_queue_visibility_timeout=timedelta(days=1),
            max_queue_polling_interval=timedelta(milliseconds=50),
            allow_replaying_terminal_instances=True,
        ),
        max_concurrent_activity_functions=3,
        max_concurrent_orchestrator_functions=4,
        max_concurrent_entity_functions=5,
        extended_sessions_enabled=True,
        extended_session_idle_timeout_in_seconds=60,
        store_inputs_in_orchestration_history=True,
        warm_continuation=False,
        overridable_existing_instance_states=OverridableStates.ANY_STATE,
        max_entity_operation_batch_size=50,
        max_orchestration_actions=1000,
        default_version="2.0",
        version_match_strategy=VersionMatchStrategy.STRICT,
        version_failure_strategy=VersionFailureStrategy.FAIL,
    )


def test_keys_are_case_insensitive(tmp_path: Path) -> None:
    host = {"Extensions": {"DURABLETASK": {"HubName": "CaseHub", "STORAGEPROVIDER": {"partitioncount": 2}}}}
    config = load_config(write_app(tmp_path, host=host), environ={})
    assert config.durable_task.hub_name == "CaseHub"
    assert config.durable_task.storage_provider.partition_count == 2


def test_numeric_and_boolean_strings_in_host_json_are_accepted(tmp_path: Path) -> None:
    # The host binds host.json through .NET configuration, where every value is a string.
    app = write_app(
        tmp_path, host=storage_host({"partitionCount": "8", "allowReplayingTerminalInstances": "True"})
    )
    sp = load_config(app, environ={}).durable_task.storage_provider
    assert (sp.partition_count, sp.allow_replaying_terminal_instances) == (8, True)


@pytest.mark.parametrize(
    ("storage", "environ", "expected"),
    [
        ({"connectionStringName": "Legacy"}, {}, "Legacy"),
        ({"connectionName": "New"}, {}, "New"),
        ({"connectionStringName": "Legacy"}, {SP_PREFIX + "connectionName": "FromEnv"}, "FromEnv"),
        ({"connectionName": "New"}, {SP_PREFIX + "connectionStringName": "FromEnv"}, "FromEnv"),
    ],
)
def test_connection_string_name_alias(
    tmp_path: Path, storage: dict[str, Any], environ: dict[str, str], expected: str
) -> None:
    config = load_config(write_app(tmp_path, host=storage_host(storage)), environ=environ)
    assert config.durable_task.storage_provider.connection_name == expected


@pytest.mark.parametrize(
    ("key", "layers", "expected"),
    [
        # layers = (host.json value, local.settings.json value, environment value); None = not set
        ("allowReplayingTerminalInstances", (True, None, None), True),
        ("allowReplayingTerminalInstances", (True, "false", None), False),
        ("allowReplayingTerminalInstances", (False, "false", "TRUE"), True),
        ("allowReplayingTerminalInstances", (True, None, "false"), False),
        ("partitionCount", (2, None, None), 2),
        ("partitionCount", (2, "6", None), 6),
        ("partitionCount", (2, 6, "12"), 12),
        ("partitionCount", (None, None, "16"), 16),
    ],
)
def test_precedence_host_local_environment(
    tmp_path: Path, key: str, layers: tuple[object, object, str | None], expected: object
) -> None:
    host_value, local_value, env_value = layers
    host = storage_host({} if host_value is None else {key: host_value})
    local = local_values({} if local_value is None else {SP_PREFIX + key: local_value})
    environ = {} if env_value is None else {SP_PREFIX + key: env_value}
    sp = load_config(
        write_app(tmp_path, host=host, local=local), environ=environ
    ).durable_task.storage_provider
    attr = {"allowReplayingTerminalInstances": "allow_replaying_terminal_instances"}.get(
        key, "partition_count"
    )
    assert getattr(sp, attr) == expected


def test_environment_overrides_of_every_kind(tmp_path: Path) -> None:
    environ = {
        PREFIX + "hubName": "EnvHub",
        PREFIX + "overridableExistingInstanceStates": "anystate",
        PREFIX + "maxOrchestrationActions": " 7 ",
        SP_PREFIX + "controlQueueVisibilityTimeout": "00:02:00",
        # Case-insensitive path and the ":" separator .NET configuration also accepts.
        "azurefunctionsjobhost:EXTENSIONS:durabletask:StorageProvider:partitionCount": "7",
        "AzureFunctionsJobHost__extensions__http__routePrefix": "",
        "AzureFunctionsJobHost__logging__logLevel__default": "Debug",  # not ours: ignored
    }
    config = load_config(write_app(tmp_path, host=durable_host({"hubName": "JsonHub"})), environ=environ)
    dt = config.durable_task
    assert dt.hub_name == "EnvHub"
    assert dt.overridable_existing_instance_states is OverridableStates.ANY_STATE
    assert dt.max_orchestration_actions == 7
    assert dt.storage_provider.control_queue_visibility_timeout == timedelta(minutes=2)
    assert dt.storage_provider.partition_count == 7
    assert config.route_prefix == ""


def test_effective_settings_overlay_environment_on_local(tmp_path: Path) -> None:
    local = local_values(
        {"A": "local", "B": "local", "Num": 5, "Flag": True, "Off": False, "F": 1.5, "N": None}
    )
    config = load_config(write_app(tmp_path, local=local), environ={"B": "env", "C": "env"})
    assert dict(config.settings) == {
        "A": "local",
        "B": "env",
        "C": "env",
        "Num": "5",
        "Flag": "true",
        "Off": "false",
        "F": "1.5",
    }
    with pytest.raises(TypeError):
        config.settings["A"] = "x"  # type: ignore[index]


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SP_PREFIX + "partitionCount", "3")
    assert load_config(tmp_path).durable_task.storage_provider.partition_count == 3


@pytest.mark.parametrize(
    ("hub", "local", "environ", "expected"),
    [
        ("%MyHubSetting%", {"MyHubSetting": "FromLocal"}, {}, "FromLocal"),
        ("%MyHubSetting%", {}, {"MyHubSetting": "FromEnv"}, "FromEnv"),
        ("%MyHubSetting%", {"MyHubSetting": "FromLocal"}, {"MyHubSetting": "FromEnv"}, "FromEnv"),
        ("Hub%Slot%V%Ver%", {"Slot": "Staging"}, {"Ver": "2"}, "HubStagingV2"),
    ],
)
def test_hub_name_app_setting_references(
    tmp_path: Path, hub: str, local: dict[str, str], environ: dict[str, str], expected: str
) -> None:
    app = write_app(tmp_path, host=durable_host({"hubName": hub}), local=local_values(local))
    assert load_config(app, environ=environ).durable_task.hub_name == expected


def test_hub_name_reference_to_missing_setting(tmp_path: Path) -> None:
    app = write_app(tmp_path, host=durable_host({"hubName": "%NoSuchSetting%"}))
    with pytest.raises(ConfigError, match=r"NoSuchSetting") as info:
        load_config(app, environ={})
    assert "extensions.durableTask.hubName" in str(info.value) and "host.json" in str(info.value)


@pytest.mark.parametrize(
    ("site", "expected"),
    [
        ("my-func-app", "myfuncapp"),
        ("123app", "t123app"),
        ("ab", "abHub"),
        ("a-", "aHub"),
        ("x" * 60, "x" * 45),
        ("9" * 60, "t" + "9" * 44),
        ("---", "DefaultTaskHub"),
        ("", "TestHubName"),
    ],
)
def test_hub_name_default_from_website_site_name(tmp_path: Path, site: str, expected: str) -> None:
    assert load_config(tmp_path, environ={"WEBSITE_SITE_NAME": site}).durable_task.hub_name == expected


def test_explicit_hub_name_beats_site_name_and_site_name_may_come_from_local(tmp_path: Path) -> None:
    local = local_values({"WEBSITE_SITE_NAME": "local-site"})
    assert load_config(write_app(tmp_path, local=local), environ={}).durable_task.hub_name == "localsite"
    write_app(tmp_path, host=durable_host({"hubName": "Explicit"}))
    assert load_config(tmp_path, environ={"WEBSITE_SITE_NAME": "site"}).durable_task.hub_name == "Explicit"


DT = "extensions.durableTask"
SP = "extensions.durableTask.storageProvider"


@pytest.mark.parametrize(
    ("host", "dotted", "detail"),
    [
        (durable_host({"hubName": "ab"}), f"{DT}.hubName", "'ab'"),
        (durable_host({"hubName": "a" * 46}), f"{DT}.hubName", "3-45"),
        (durable_host({"hubName": "my-hub"}), f"{DT}.hubName", "'my-hub'"),
        (durable_host({"hubName": "1hub"}), f"{DT}.hubName", "start with a letter"),
        (durable_host({"hubName": 12}), f"{DT}.hubName", "string"),
        (storage_host({"partitionCount": 0}), f"{SP}.partitionCount", "between 1 and 16"),
        (storage_host({"partitionCount": 17}), f"{SP}.partitionCount", "between 1 and 16"),
        (storage_host({"partitionCount": "four"}), f"{SP}.partitionCount", "'four'"),
        (storage_host({"partitionCount": True}), f"{SP}.partitionCount", "integer"),
        (storage_host({"partitionCount": 3.5}), f"{SP}.partitionCount", "integer"),
        (storage_host({"controlQueueBatchSize": 33}), f"{SP}.controlQueueBatchSize", "between 1 and 32"),
        (storage_host({"controlQueueBufferThreshold": 1001}), f"{SP}.controlQueueBufferThreshold", "1000"),
        (
            storage_host({"controlQueueVisibilityTimeout": "5 minutes"}),
            f"{SP}.controlQueueVisibilityTimeout",
            "",
        ),
        (
            storage_host({"controlQueueVisibilityTimeout": 300}),
            f"{SP}.controlQueueVisibilityTimeout",
            "timespan",
        ),
        (
            storage_host({"controlQueueVisibilityTimeout": "00:00:30"}),
            f"{SP}.controlQueueVisibilityTimeout",
            "",
        ),
        (
            storage_host({"maxQueuePollingInterval": "00:00:00.01"}),
            f"{SP}.maxQueuePollingInterval",
            "at least",
        ),
        (storage_host({"connectionName": ""}), f"{SP}.connectionName", "empty"),
        (storage_host({"type": "mssql"}), f"{SP}.type", "Azure Storage"),
        (durable_host({"extendedSessionsEnabled": "yes"}), f"{DT}.extendedSessionsEnabled", "'yes'"),
        (
            durable_host({"overridableExistingInstanceStates": "Some"}),
            f"{DT}.overridableExistingInstanceStates",
            "",
        ),
        (
            durable_host({"maxConcurrentActivityFunctions": 0}),
            f"{DT}.maxConcurrentActivityFunctions",
            "at least",
        ),
        (durable_host({"storageProvider": [1]}), SP, "object"),
        ({"extensions": {"durableTask": "on"}}, DT, "object"),
    ],
)
def test_invalid_host_json_values(tmp_path: Path, host: dict[str, Any], dotted: str, detail: str) -> None:
    app = write_app(tmp_path, host=host)
    with pytest.raises(ConfigError) as info:
        load_config(app, environ={})
    message = str(info.value)
    assert dotted in message and str(app / "host.json") in message and detail in message


@pytest.mark.parametrize("hub", ["ab", "my-hub"])
def test_invalid_hub_name_is_invalid_hub_name_error(tmp_path: Path, hub: str) -> None:
    with pytest.raises(InvalidHubNameError):
        load_config(write_app(tmp_path, host=durable_host({"hubName": hub})), environ={})


@pytest.mark.parametrize(
    ("name", "value", "dotted"),
    [
        (SP_PREFIX + "partitionCount", "four", f"{SP}.partitionCount"),
        (SP_PREFIX + "partitionCount", "0", f"{SP}.partitionCount"),
        (SP_PREFIX + "allowReplayingTerminalInstances", "yes", f"{SP}.allowReplayingTerminalInstances"),
        (SP_PREFIX + "maxQueuePollingInterval", "30", f"{SP}.maxQueuePollingInterval"),
        (PREFIX + "hubName", "bad-name", f"{DT}.hubName"),
    ],
)
def test_bad_override_values_name_the_variable(tmp_path: Path, name: str, value: str, dotted: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={name: value})
    assert dotted in str(info.value) and f"environment variable {name!r}" in str(info.value)
    # The same value from local.settings.json names the setting and the file instead.
    write_app(tmp_path, local=local_values({name: value}))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert dotted in str(info.value) and repr(name) in str(info.value)
    assert str(tmp_path / "local.settings.json") in str(info.value)


@pytest.mark.parametrize("file", ["host.json", "local.settings.json"])
@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('{\n  "version": "2.0",\n  "extensions": {,}\n}', "line 3, column"),
        ("", "is empty"),
        ("[1, 2]", "top level must be a JSON object, not array"),
        ('"text"', "not string"),
    ],
)
def test_malformed_files(tmp_path: Path, file: str, text: str, detail: str) -> None:
    (tmp_path / file).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert str(tmp_path / file) in str(info.value) and detail in str(info.value)


@pytest.mark.parametrize(
    ("local", "detail"),
    [
        ({"Values": {"Nested": {"a": 1}}}, "Values.Nested"),
        ({"Values": {"List": [1]}}, "Values.List"),
        ({"Values": ["x"]}, "Values must be a JSON object"),
        ({"IsEncrypted": True, "Values": {}}, "IsEncrypted"),
    ],
)
def test_invalid_local_settings(tmp_path: Path, local: dict[str, Any], detail: str) -> None:
    app = write_app(tmp_path, local=local)
    with pytest.raises(ConfigError) as info:
        load_local_settings(app)
    assert detail in str(info.value) and "local.settings.json" in str(info.value)


def test_load_local_settings(tmp_path: Path) -> None:
    assert load_local_settings(tmp_path) == {}
    assert load_local_settings(write_app(tmp_path, local={"IsEncrypted": False})) == {}
    # A byte-order mark, as Windows editors write it, is tolerated.
    (tmp_path / "local.settings.json").write_text('{"Values": {"K": "v"}}', encoding="utf-8-sig")
    assert load_local_settings(tmp_path) == {"K": "v"}


def test_unknown_keys_warn_but_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    host = durable_host({"hubName": "WarnHub", "fooBar": 1, "storageProvider": {"bazQux": True}})
    app = write_app(tmp_path, host=host)
    with caplog.at_level(logging.WARNING, logger="durable_ext.config"):
        config = load_config(app, environ={PREFIX + "quxQuux": "1"})
    assert config.durable_task.hub_name == "WarnHub"
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"{DT}.fooBar" in m and str(app / "host.json") in m for m in messages)
    assert any(f"{SP}.bazQux" in m and str(app / "host.json") in m for m in messages)
    assert any(f"{DT}.quxQuux" in m and PREFIX + "quxQuux" in m for m in messages)
    assert len(messages) == 3


def test_unimplemented_settings_at_their_defaults_are_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = durable_host(
        {
            "tracing": {
                "traceInputsAndOutputs": False,
                "traceReplayEvents": "false",
                "distributedTracingEnabled": False,
                "distributedTracingProtocol": "W3CTraceContext",
                "version": "V2",
            },
            "notifications": {"eventGrid": {"topicEndpoint": "", "publishRetryCount": 3}},
            "httpSettings": {"defaultAsyncRequestSleepTimeMilliseconds": 1000},
            "localRpcEndpointEnabled": True,
            "appLeaseOptions": {"renewInterval": "00:00:25", "leaseInterval": "00:01:00"},
            "useAppLease": False,
            "entityMessageReorderWindowInMinutes": 30,
            "rollbackEntityOperationsOnExceptions": True,
            "throwStatusExceptionsOnRaiseEvent": False,
            "storageProvider": {
                "type": "AzureStorage",
                "trackingStoreNamePrefix": "",
                "QueueClientMessageEncoding": "utf8",
                "useLegacyPartitionManagement": False,
            },
        }
    )
    host["extensions"]["http"] = {"maxConcurrentRequests": 10}
    host["logging"] = {
        "applicationInsights": {"samplingSettings": {"isEnabled": True, "excludedTypes": "Request"}}
    }
    host["extensionBundle"] = {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    app = write_app(tmp_path, host=host)
    with caplog.at_level(logging.WARNING, logger="durable_ext.config"):
        load_config(app, environ={PREFIX + "tracing__traceReplayEvents": "false"})
    assert caplog.records == []


@pytest.mark.parametrize(
    ("durable", "key"),
    [
        ({"tracing": {"traceInputsAndOutputs": True}}, "tracing.traceInputsAndOutputs"),
        ({"tracing": {"traceReplayEvents": True}}, "tracing.traceReplayEvents"),
        ({"notifications": {"eventGrid": {"topicEndpoint": "https://t"}}}, "eventGrid.topicEndpoint"),
        ({"localRpcEndpointEnabled": False}, "localRpcEndpointEnabled"),
        ({"appLeaseOptions": {"acquireInterval": "00:01:00"}}, "appLeaseOptions.acquireInterval"),
        ({"entityMessageReorderWindowInMinutes": 5}, "entityMessageReorderWindowInMinutes"),
        ({"rollbackEntityOperationsOnExceptions": False}, "rollbackEntityOperationsOnExceptions"),
        ({"throwStatusExceptionsOnRaiseEvent": True}, "throwStatusExceptionsOnRaiseEvent"),
        ({"storageProvider": {"trackingStoreNamePrefix": "X"}}, "trackingStoreNamePrefix"),
        ({"storageProvider": {"queueClientMessageEncoding": "Base64"}}, "queueClientMessageEncoding"),
        ({"storageProvider": {"useLegacyPartitionManagement": True}}, "useLegacyPartitionManagement"),
        ({"storageProvider": {"useTablePartitionManagement": False}}, "useTablePartitionManagement"),
        ({"storageProvider": {"fetchLargeMessagesAutomatically": False}}, "fetchLargeMessagesAutomatically"),
        ({"storageProvider": {"trackingStoreConnectionName": "Other"}}, "trackingStoreConnectionName"),
        (
            {"storageProvider": {"trackingStoreConnectionStringName": "Other"}},
            "trackingStoreConnectionStringName",
        ),
    ],
)
def test_unimplemented_settings_off_their_defaults_are_refused(
    tmp_path: Path, durable: dict[str, Any], key: str
) -> None:
    app = write_app(tmp_path, host=durable_host(durable))
    with pytest.raises(ConfigError) as info:
        load_config(app, environ={})
    message = str(info.value)
    assert "\n" not in message
    assert f"{key} = " in message and str(app / "host.json") in message
    assert message.startswith("Unsupported ") and "the Durable Functions default" in message


@pytest.mark.parametrize(
    ("tracing", "message"),
    [
        ({"distributedTracingEnabled": True}, "tracing.distributedTracingEnabled = true in .* without"),
        ({"distributedTracingEnabled": True, "version": "V1"}, 'tracing.version = "V1" in'),
        (
            {"distributedTracingEnabled": True, "version": "V2", "distributedTracingProtocol": "Zipkin"},
            "'Zipkin' is not one of HttpCorrelationProtocol, W3CTraceContext",
        ),
    ],
)
def test_distributed_tracing_other_than_v2_is_refused(
    tmp_path: Path, tracing: dict[str, Any], message: str
) -> None:
    app = write_app(tmp_path, host=durable_host({"tracing": tracing}))
    with pytest.raises(ConfigError, match=message):
        load_config(app, environ={})


def test_distributed_tracing_v2_is_accepted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tracing = {
        "distributedTracingEnabled": True,
        "version": "V2",
        "distributedTracingProtocol": "W3CTraceContext",
    }
    app = write_app(tmp_path, host=durable_host({"tracing": tracing}))
    with caplog.at_level(logging.WARNING, logger="durable_ext.config"):
        load_config(app, environ={})
    assert caplog.records == []


def test_unimplemented_setting_refused_from_an_override(tmp_path: Path) -> None:
    app = write_app(tmp_path, host=durable_host({}))
    name = PREFIX + "tracing__traceReplayEvents"
    with pytest.raises(ConfigError, match=r"tracing\.traceReplayEvents = \"true\" in environment variable"):
        load_config(app, environ={name: "true"})
    name = PREFIX + "notifications__eventGrid__topicEndpoint"
    with pytest.raises(ConfigError, match="Event Grid"):
        load_config(app, environ={name: "https://topic"})


def test_use_app_lease_is_accepted_either_way(tmp_path: Path) -> None:
    for value in (True, False):
        load_config(write_app(tmp_path, host=durable_host({"useAppLease": value})), environ={})
    with pytest.raises(ConfigError, match="useAppLease"):
        load_config(write_app(tmp_path, host=durable_host({"useAppLease": "maybe"})), environ={})


@pytest.mark.parametrize("name", ["APPLICATIONINSIGHTS_CONNECTION_STRING", "APPINSIGHTS_INSTRUMENTATIONKEY"])
def test_application_insights_settings_are_refused(tmp_path: Path, name: str) -> None:
    app = write_app(tmp_path, host=durable_host({}), local={"Values": {name: "InstrumentationKey=x"}})
    with pytest.raises(ConfigError) as info:
        load_config(app, environ={})
    assert name in str(info.value) and "local.settings.json" in str(info.value)
    assert "Application Insights" in str(info.value) and "OpenTelemetry" in str(info.value)
    with pytest.raises(ConfigError, match="environment variable"):
        load_config(write_app(tmp_path, local={}), environ={name: "InstrumentationKey=x"})
    load_config(write_app(tmp_path, local={}), environ={name: ""})  # an empty setting sends nothing


def test_versioning_settings(tmp_path: Path) -> None:
    host = durable_host(
        {"defaultVersion": "1.5", "versionMatchStrategy": "currentorolder", "versionFailureStrategy": "FAIL"}
    )
    options = load_config(write_app(tmp_path, host=host), environ={}).durable_task
    assert options.default_version == "1.5"
    assert options.version_match_strategy is VersionMatchStrategy.CURRENT_OR_OLDER
    assert options.version_failure_strategy is VersionFailureStrategy.FAIL
    overridden = load_config(
        write_app(tmp_path, host=host),
        environ={PREFIX + "defaultVersion": "2.0", PREFIX + "versionMatchStrategy": "None"},
    ).durable_task
    assert overridden.versioning.version == "2.0"
    assert overridden.versioning.match is VersionMatchStrategy.NONE


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("versionMatchStrategy", "Exact", "one of 'None', 'Strict', 'CurrentOrOlder', got 'Exact'"),
        ("versionFailureStrategy", "Abandon", "one of 'Reject', 'Fail', got 'Abandon'"),
        ("versionFailureStrategy", 1, "one of 'Reject', 'Fail', got number 1"),
        ("defaultVersion", 2, "expected a string, got number 2"),
    ],
)
def test_bad_versioning_settings(tmp_path: Path, key: str, value: object, expected: str) -> None:
    app = write_app(tmp_path, host=durable_host({key: value}))
    with pytest.raises(ConfigError) as info:
        load_config(app, environ={})
    assert f"Invalid {DT}.{key} in {app / 'host.json'}" in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("storage", "word"),
    [
        ({"controlQueueBatchSize": 32, "controlQueueBufferThreshold": 16}, "controlQueueBufferThreshold"),
    ],
)
def test_unsupported_storage_options_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, storage: dict[str, Any], word: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="durable_ext.config"):
        load_config(write_app(tmp_path, host=storage_host(storage)), environ={})
    assert any(word in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:05:00", timedelta(minutes=5)),
        ("0:0:1", timedelta(seconds=1)),
        ("23:59:59", timedelta(hours=23, minutes=59, seconds=59)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("00:00:00.05", timedelta(milliseconds=50)),
        ("00:00:01.1234567", timedelta(seconds=1, microseconds=123457)),
        ("10.00:00:00.5", timedelta(days=10, milliseconds=500)),
        (" 00:00:30 ", timedelta(seconds=30)),
    ],
)
def test_parse_timespan(text: str, expected: timedelta) -> None:
    assert parse_timespan(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "30",
        "00:05",
        "5 minutes",
        "24:00:00",
        "00:60:00",
        "00:00:60",
        "00:00:00.12345678",
        "-00:00:01",
        "1:2:3:4",
    ],
)
def test_parse_timespan_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="timespan"):
        parse_timespan(text)


@pytest.mark.parametrize("name", ["abc", "MyHub2", "a" * 45, "TestHubName"])
def test_validate_hub_name_accepts(name: str) -> None:
    assert validate_hub_name(name) == name


@pytest.mark.parametrize("name", ["", "ab", "a" * 46, "my-hub", "my_hub", "1hub", "hub name", "Hübname"])
def test_validate_hub_name_rejects(name: str) -> None:
    with pytest.raises(InvalidHubNameError) as info:
        validate_hub_name(name)
    assert repr(name) in str(info.value) and "start with a letter" in str(info.value)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'\xef\xbb\xbf{"version": "2.0"}', "byte order mark"),
        (b'{"version": "2.0", "x": "\xff"}', "not UTF-8 text (byte 0xff at offset 25)"),
        (b"\n\t ", "is empty"),
    ],
)
def test_host_json_that_df_cannot_import_with_is_refused(tmp_path: Path, content: bytes, detail: str) -> None:
    (tmp_path / "host.json").write_bytes(content)
    for read in (lambda: read_host_json(tmp_path), lambda: load_config(tmp_path, environ={})):
        with pytest.raises(ConfigError) as info:
            read()
        assert str(info.value).startswith(str(tmp_path / "host.json")) and detail in str(info.value)


def test_connection_string(tmp_path: Path) -> None:
    config = load_config(tmp_path, environ={"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert config.storage_connection() == StorageConnection(
        "AzureWebJobsStorage", connection_string="UseDevelopmentStorage=true"
    )
    app = write_app(
        tmp_path, host=storage_host({"connectionName": "MyConn"}), local=local_values({"MyConn": "X=1"})
    )
    assert load_config(app, environ={}).storage_connection().connection_string == "X=1"
    # As the WebJobs SDK: AzureWebJobs<name> before <name>.
    both = load_config(app, environ={"AzureWebJobsMyConn": "Y=2"}).storage_connection()
    assert (both.name, both.connection_string) == ("AzureWebJobsMyConn", "Y=2")


def test_identity_connection_settings(tmp_path: Path) -> None:
    environ = {
        "AzureWebJobsStorage__accountName": "acct",
        "azurewebjobsstorage:Credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "",
        "AzureWebJobsStorageOther": "ignored",
    }
    connection = load_config(tmp_path, environ=environ).storage_connection()
    assert connection.name == "AzureWebJobsStorage" and connection.connection_string is None
    assert dict(connection.identity) == {"accountname": "acct", "credential": "managedidentity"}
    # A connection string under the same name wins over the identity settings, as in the host.
    environ["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
    assert load_config(tmp_path, environ=environ).storage_connection().connection_string is not None


@pytest.mark.parametrize(
    "environ", [{}, {"AzureWebJobsStorage": ""}, {"AzureWebJobsStorage__accountName": ""}]
)
def test_connection_missing(tmp_path: Path, environ: dict[str, str]) -> None:
    config = load_config(tmp_path, environ=environ)
    with pytest.raises(ConfigError, match=r"'AzureWebJobsStorage' .*AzureWebJobsStorage__accountName"):
        config.storage_connection()


def test_identity_connection_under_a_custom_connection_name(tmp_path: Path) -> None:
    app = write_app(tmp_path, host=storage_host({"connectionName": "Orders"}), local=local_values({}))
    own = load_config(app, environ={"Orders__accountName": "orders"}).storage_connection()
    assert (own.name, dict(own.identity)) == ("Orders", {"accountname": "orders"})
    prefixed = {"Orders__accountName": "orders", "AzureWebJobsOrders__accountName": "webjobs"}
    found = load_config(app, environ=prefixed).storage_connection()
    assert (found.name, dict(found.identity)) == ("AzureWebJobsOrders", {"accountname": "webjobs"})


def test_host_json_functions_is_the_allow_list(tmp_path: Path) -> None:
    assert load_config(tmp_path, environ={}).functions is None
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "Functions": ["a", "B"]}))
    assert load_config(tmp_path, environ={}).functions == ("a", "B")
    (tmp_path / "host.json").write_text(json.dumps({"functions": "a"}))
    with pytest.raises(ConfigError, match=r"Invalid functions in .*host\.json: expected an array"):
        load_config(tmp_path, environ={})


def test_local_settings_host_section(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_host_start_settings(tmp_path) == HostStartSettings()
    host = {"localHttpPort": "7072", "CORS": "http://a.test", "CORSCredentials": True, "Other": 1}
    write_app(tmp_path, local={"Host": host})
    with caplog.at_level(logging.WARNING):
        settings = load_host_start_settings(tmp_path)
    assert settings == HostStartSettings(local_http_port=7072, cors="http://a.test", cors_credentials=True)
    assert "Ignoring unknown key Host.Other" in caplog.text
    write_app(tmp_path, local={"Host": {"LocalHttpPort": 70000}})
    with pytest.raises(ConfigError, match=r"Invalid Host\.LocalHttpPort in .*local\.settings\.json"):
        load_host_start_settings(tmp_path)
