"""Orchestration versioning: the pure rules of versioning.py, triage's check, and the whole path on
real Azurite (a start's version, ``context.version``, sub-orchestrations, continue-as-new, and the
``Strict``/``CurrentOrOlder`` checks with their ``Fail`` and ``Reject`` strategies)."""

from __future__ import annotations

import logging
import warnings
from contextlib import AsyncExitStack
from pathlib import Path

import azure.durable_functions as df
import httpx
import pytest
from azure.durable_functions.models.utils import http_utils

from durable_ext.app_loader import FunctionRegistry, load_app
from durable_ext.client import OrchestrationState, TaskHubClient
from durable_ext.history import (
    ExecutionStartedEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorStartedEvent,
    SubOrchestrationInstanceCreatedEvent,
    TaskCompletedEvent,
    TaskScheduledEvent,
    utc_now,
)
from durable_ext.host.df_json import MANAGEMENT_PREFIX
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState
from durable_ext.versioning import (
    VERSION_MISMATCH_MESSAGE,
    VersionFailureStrategy,
    VersioningPolicy,
    VersionMatchStrategy,
    VersionVerdict,
    compare_versions,
    mismatch_failure,
    version_matches,
)
from durable_ext.worker.session import Execution
from durable_ext.worker.triage import triage
from tests.engine_support import engine_for, poll
from tests.test_management_api import serve_management

VERSION_APP_DIR = Path(__file__).parent / "apps" / "version_app"
TIMEOUT = 60.0
STRICT = VersionMatchStrategy.STRICT
CURRENT_OR_OLDER = VersionMatchStrategy.CURRENT_OR_OLDER
FAIL = VersionFailureStrategy.FAIL
REJECT = VersionFailureStrategy.REJECT
MISMATCH_OUTPUT = f"VersionMismatch: {VERSION_MISMATCH_MESSAGE}"


# ---- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "other", "expected"),
    [
        ("", "", 0),
        (None, "  ", 0),
        ("", "1.0", -1),
        ("1.0", None, 1),
        ("1.0", "1.0", 0),
        ("1.2", "1.10", -1),  # numbers, not text
        ("2.0", "10.0", -1),
        ("1.0", "1.0.0", -1),  # System.Version: a missing component is smaller
        ("1.0.0.1", "1.0.0", 1),
        ("1", "2", -1),  # one number is no System.Version: compared as text
        ("10", "9", -1),
        ("V1.0-release", "v1.0-RELEASE", 0),  # text ignores case
        ("2025-01-01", "2025-02-01", -1),
        ("1.0", "v1.0", -1),  # one parses, the other does not: text
    ],
)
def test_compare_versions(source: str | None, other: str | None, expected: int) -> None:
    assert compare_versions(source, other) == expected
    assert compare_versions(other, source) == -expected


def test_match_strategies() -> None:
    assert version_matches(VersionMatchStrategy.NONE, "1.0", "9.0")
    assert version_matches(STRICT, "1.0", "1.0")
    assert not version_matches(STRICT, "1.0", "1.0.0")
    assert not version_matches(STRICT, "1.0", "1.0 ")
    assert version_matches(STRICT, "", None)  # both unversioned
    assert not version_matches(STRICT, "", "1.0")
    assert version_matches(CURRENT_OR_OLDER, "2.0", "1.9")
    assert version_matches(CURRENT_OR_OLDER, "2.0", "2.0")
    assert version_matches(CURRENT_OR_OLDER, "2.0", "")  # unversioned is older than any version
    assert not version_matches(CURRENT_OR_OLDER, "2.0", "2.1")
    assert not version_matches(CURRENT_OR_OLDER, "", "1.0")


def test_policy_verdicts_and_new_instance_versions() -> None:
    assert VersioningPolicy().judge(None) is VersionVerdict.RUN
    assert VersioningPolicy().judge("1.0") is VersionVerdict.REJECT  # the defaults: CurrentOrOlder, Reject
    assert VersioningPolicy("1.0", STRICT, FAIL).judge("2.0") is VersionVerdict.FAIL
    assert VersioningPolicy("1.0", STRICT, REJECT).judge("2.0") is VersionVerdict.REJECT
    assert VersioningPolicy("1.0", STRICT, FAIL).judge("1.0") is VersionVerdict.RUN
    policy = VersioningPolicy("3.0")
    assert policy.version_for_new_instance(None) == "3.0"
    assert policy.version_for_new_instance("") == ""
    assert policy.version_for_new_instance("1.5") == "1.5"
    failure = mismatch_failure()
    assert str(failure) == MISMATCH_OUTPUT and failure.is_non_retriable


# ---- triage's check ---------------------------------------------------------------------------

ID = "versioned-instance"


def _message(event: ExecutionStartedEvent | TaskCompletedEvent, message_id: str) -> ReceivedMessage:
    data = MessageData(TaskMessage(event, OrchestrationInstance(ID, "e1")))
    return ReceivedMessage(data, "q", message_id, "receipt", 1, utc_now(), None)


def _start(version: str) -> ExecutionStartedEvent:
    return ExecutionStartedEvent(
        orchestration_instance=OrchestrationInstance(ID, "e1"), name="orch", input="null", version=version
    )


def test_triage_rejects_fails_or_runs_by_the_instance_version() -> None:
    history = Execution(
        ID,
        "e1",
        [OrchestratorStartedEvent(), _start("2.0"), TaskScheduledEvent(event_id=0, name="a")],
        None,
    )
    result = _message(TaskCompletedEvent(task_scheduled_id=0, result="1"), "m1")

    def decide(policy: VersioningPolicy | None) -> tuple[int, int, bool]:
        decisions = triage(
            history, [result], None, now=utc_now(), replay_terminal=False, hub_name="H", versioning=policy
        )
        return len(decisions.consume), len(decisions.abandon), decisions.version_mismatch

    assert decide(None) == (1, 0, False)
    assert decide(VersioningPolicy("2.0", STRICT, FAIL)) == (1, 0, False)
    assert decide(VersioningPolicy("1.0", STRICT, FAIL)) == (1, 0, True)
    assert decide(VersioningPolicy("1.0", CURRENT_OR_OLDER, REJECT)) == (0, 1, False)
    assert decide(VersioningPolicy("3.0", CURRENT_OR_OLDER, REJECT)) == (1, 0, False)


def test_triage_checks_a_new_start_by_its_own_version() -> None:
    start = _message(_start("2.0"), "m1")
    row = InstanceState(
        instance_id=ID, execution_id="e1", runtime_status=OrchestrationStatus.Pending, version="2.0"
    )
    empty = Execution(ID, None, [], None)
    decisions = triage(
        empty,
        [start],
        row,
        now=utc_now(),
        replay_terminal=False,
        hub_name="H",
        versioning=VersioningPolicy("1.0"),
    )
    assert decisions.abandon == [start] and not decisions.consume


# ---- end to end on Azurite --------------------------------------------------------------------


@pytest.fixture(scope="module")
def version_registry() -> FunctionRegistry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_app(VERSION_APP_DIR)


async def _ended(client: TaskHubClient, instance_id: str) -> OrchestrationState:
    state: OrchestrationState | None = None

    async def ended() -> bool:
        nonlocal state
        state = await client.get_status(instance_id)
        return state is not None and state.completed_time is not None

    await poll(ended, f"{instance_id} to end", TIMEOUT)
    assert state is not None
    return state


async def _row_version(hub: TaskHub, instance_id: str) -> str | None:
    row = await hub.tracking.get_instance(instance_id)
    assert row is not None
    return row.version


async def test_management_api_and_df_client_start_with_a_version(
    hub: TaskHub, version_registry: FunctionRegistry
) -> None:
    async with engine_for(hub, version_registry, "w2", default_version="2.0") as engine:
        client = TaskHubClient(hub, handoff=engine, default_version="2.0")
        async with AsyncExitStack() as stack:
            origin, binding = await serve_management(stack, client, version_registry)
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT))
            url = f"{origin}{MANAGEMENT_PREFIX}/orchestrators/versioned/by-query?version=2.0"
            response = await http.post(url)
            assert response.status_code == 202, response.text
            older = await http.post(f"{origin}{MANAGEMENT_PREFIX}/orchestrators/versioned/older?version=1.0")
            assert older.status_code == 202, older.text
            durable = df.DurableOrchestrationClient(binding)
            try:
                await durable.start_new("versioned", "by-df-client", version="1.9")
            finally:
                await http_utils._close_session()
        for instance_id, version in (("by-query", "2.0"), ("older", "1.0"), ("by-df-client", "1.9")):
            state = await _ended(client, instance_id)
            assert state.runtime_status is OrchestrationStatus.Completed, state
            assert state.output == f'"{version}"'  # what context.version read
            assert state.version == version == await _row_version(hub, instance_id)
            history = await hub.tracking.load_history(instance_id)
            start = next(e for e in history.events if isinstance(e, ExecutionStartedEvent))
            assert start.version == version


async def test_default_version_reaches_instances_sub_orchestrations_and_new_generations(
    hub: TaskHub, version_registry: FunctionRegistry
) -> None:
    async with engine_for(hub, version_registry, "w3", default_version="3.0") as engine:
        client = TaskHubClient(hub, handoff=engine, default_version="3.0")
        await client.start_new("versioned", "plain")
        await client.start_new("versioned_parent", "parent")
        await client.start_new("versioned_loop", "loop", "0")
        plain = await _ended(client, "plain")
        assert (plain.output, plain.version) == ('"3.0"', "3.0")
        parent = await _ended(client, "parent")
        assert parent.runtime_status is OrchestrationStatus.Completed, parent
        assert parent.output == '["3.0", "3.0", "1.5"]'
        assert await _row_version(hub, "parent-default") == "3.0"
        assert await _row_version(hub, "parent-chosen") == "1.5"
        created = (await hub.tracking.load_history("parent")).events
        assert [e.version for e in created if isinstance(e, SubOrchestrationInstanceCreatedEvent)] == [
            "3.0",
            "1.5",
        ]
        child_start = (await hub.tracking.load_history("parent-chosen")).events
        start = next(e for e in child_start if isinstance(e, ExecutionStartedEvent))
        assert start.parent_instance is not None and start.parent_instance.version == "3.0"
        loop = await _ended(client, "loop")
        assert (loop.output, loop.version) == ('[2, "3.0"]', "3.0")


async def test_strict_mismatch_with_fail_fails_the_instance(
    hub: TaskHub, version_registry: FunctionRegistry
) -> None:
    options = {"default_version": "1.0", "version_match_strategy": STRICT, "version_failure_strategy": FAIL}
    async with engine_for(hub, version_registry, "strict", **options) as engine:
        client = TaskHubClient(hub, handoff=engine, default_version="1.0")
        await client.start_new("versioned", "newer", version="2.0")
        await client.start_new("versioned", "same")
        failed = await _ended(client, "newer")
        assert failed.runtime_status is OrchestrationStatus.Failed
        assert failed.output == MISMATCH_OUTPUT
        assert failed.version == "2.0"
        same = await _ended(client, "same")
        assert (same.runtime_status, same.output) == (OrchestrationStatus.Completed, '"1.0"')


async def test_reject_leaves_the_instance_pending_for_a_compatible_worker(
    hub: TaskHub, version_registry: FunctionRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="durable_ext.worker.triage")

    def rejected() -> bool:
        return any("not run here" in r.getMessage() and "'2.0'" in r.getMessage() for r in caplog.records)

    async def was_rejected() -> bool:
        return rejected()

    async with engine_for(hub, version_registry, "old", default_version="1.0") as old:
        client = TaskHubClient(hub, handoff=old, default_version="1.0")
        await client.start_new("versioned", "newer", version="2.0")
        await poll(was_rejected, "the old worker to reject the newer instance", TIMEOUT)
        state = await client.get_status("newer")
        assert state is not None and state.runtime_status is OrchestrationStatus.Pending
        assert (await hub.tracking.load_history("newer")).events == []
    async with engine_for(hub, version_registry, "new", default_version="2.0"):
        state = await _ended(TaskHubClient(hub), "newer")
        assert (state.runtime_status, state.output) == (OrchestrationStatus.Completed, '"2.0"')
