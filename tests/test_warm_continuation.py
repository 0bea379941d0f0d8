"""Warm continuation (durable_ext/replay.py): an episode of an instance kept in memory continues the
live orchestrator with the new events only, and must give exactly what a full replay gives.

Every orchestrator of the sample apps and of tests/apps/warm_app runs on a real engine whose executor
also replays each request from event 0 in a fresh memo and compares the two runs; the same scenarios
then run with ``warmContinuation`` off and must end the same way. Other tests check that each doubt
(another worker, a history written behind the cache, a suspension) makes the executor replay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from durable_ext.app_loader import FunctionRegistry, load_app
from durable_ext.client import TaskHubClient
from durable_ext.config import DurableTaskOptions
from durable_ext.executor import ExecutionRequest, OrchestratorRun
from durable_ext.history import (
    EventRaisedEvent,
    EventType,
    ExecutionResumedEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    TaskCompletedEvent,
    TaskScheduledEvent,
)
from durable_ext.replay import DfExecutionMemo, DfOrchestrationExecutor
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from tests.engine_support import ENGINE_APP_DIR, FAST_LEASES, poll

REPO_DIR = Path(__file__).parent.parent
WARM_APP_DIR = Path(__file__).parent / "apps" / "warm_app"
TIMEOUT = 90.0


class ShadowedExecutor:
    """The engine's executor, each of whose runs is compared with a full replay of the same request."""

    def __init__(self, registry: FunctionRegistry, options: DurableTaskOptions) -> None:
        self.warm = DfOrchestrationExecutor.for_options(registry, options)
        self.full = DfOrchestrationExecutor.for_options(
            registry, dataclasses.replace(options, warm_continuation=False)
        )
        self.differences: list[str] = []

    def has_orchestrator(self, name: str) -> bool:
        return self.warm.has_orchestrator(name)

    def missing_orchestrator_message(self, name: str) -> str:
        return self.warm.missing_orchestrator_message(name)

    def new_memo(self) -> object:
        return self.warm.new_memo()

    def events_to_run(self, memo: object, past: int, new: int) -> int:
        return self.warm.events_to_run(memo, past, new) + past + new

    def execute(self, request: ExecutionRequest, memo: object) -> OrchestratorRun:
        warm, raised = _outcome(lambda: self.warm.execute(request, memo))
        full, _ = _outcome(lambda: self.full.execute(request, self.full.new_memo()))
        if warm != full:
            self.differences.append(
                f"{request.instance_id} at event {request.new_events_start}: {warm} != {full}"
            )
        if raised is not None:
            raise raised
        assert isinstance(warm, OrchestratorRun)
        return warm


def _outcome(run: Callable[[], OrchestratorRun]) -> tuple[object, Exception | None]:
    """A run, or the type and text of what it raised (and the exception itself)."""
    try:
        return run(), None
    except Exception as exc:
        return (type(exc).__name__, str(exc)), exc


@dataclass(frozen=True)
class Scenario:
    """One orchestration to run, and what to send it once it runs."""

    name: str
    input: Any = None
    """The orchestrator's input; in a text, ``{id}`` stands for the instance ID."""
    events: tuple[tuple[str, Any], ...] = ()
    """Raised in this order once the instance reports ``ready`` as its custom status (else once it runs)."""
    ready: Any = None
    suspend: bool = False
    """Suspend the instance before raising the events, and resume it once they are in its history."""


SAMPLE_SCENARIOS = (
    Scenario("hello_sequence"),
    Scenario("fan_out_fan_in", 6),
    Scenario("parent_with_sub_orchestration"),
    Scenario("retry_example"),
    Scenario("monitor", {"checks": 2, "interval_seconds": 1}),
    Scenario("counter_orchestrator"),
    Scenario(
        "approval_workflow", {"timeout_seconds": 60}, (("Approval", True),), ready="Waiting for approval"
    ),
    Scenario("approval_workflow", {"timeout_seconds": 1}),
)
ENGINE_SCENARIOS = (
    Scenario("chain", 1),
    Scenario("fan_out", 20),
    Scenario("timer"),
    Scenario("approval", 60, (("Approval", "by alice"),), ready="waiting"),
    Scenario("approval", 1),
    Scenario("parent"),
    Scenario("counter_loop", 7),
    Scenario("retry"),
    Scenario("catches"),
    Scenario("raises"),
    Scenario("carry", 0, (("A", 1), ("B", 2))),
    Scenario("drifting", None, (("go", None),)),
    Scenario("use_counter", "{id}"),
    Scenario("rewindable", "{id}"),
    Scenario("rewindable_parent", "{id}"),
    Scenario("big_status", 10, (("Go", None),), ready="w" * 10),
    Scenario("lets_activity_fail"),
    Scenario("catches_child"),
    Scenario("long_timer", 1),
    Scenario("long_timer_or_event", 60, (("Go", "now"),)),
    Scenario("slow_retry", 100),
)
SUSPENDED = Scenario("suspendable", None, (("go", 100),), ready="waiting", suspend=True)
WARM_SCENARIOS = (
    Scenario("fan_in_then_race"),
    Scenario("timers_and_any"),
    Scenario(
        "events_in_order", None, (("D", "d"), ("C", "c"), ("A", "a"), ("B", "b")), ready="waiting for A"
    ),
    Scenario("children"),
    Scenario("retries"),
    Scenario("generations", {"generation": 0, "value": 1}, (("late", "x"), ("unused", "y"))),
    Scenario("catches_and_goes_on"),
    Scenario("uses_entity"),
    SUSPENDED,
    Scenario("fails_late"),
)
APPS = {
    "sample": (REPO_DIR, SAMPLE_SCENARIOS),
    "engine_app": (ENGINE_APP_DIR, ENGINE_SCENARIOS),
    "warm_app": (WARM_APP_DIR, WARM_SCENARIOS),
}


def _load(app_dir: Path) -> FunctionRegistry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_app(app_dir)


def _engine(hub: TaskHub, registry: FunctionRegistry, options: DurableTaskOptions, **kwargs: Any) -> Engine:
    return Engine(hub, registry, options, partition_options=FAST_LEASES, **kwargs)


async def _status_is(client: TaskHubClient, instance_id: str, expected: Callable[[Any], bool]) -> None:
    async def reached() -> bool:
        state = await client.get_status(instance_id)
        return state is not None and expected(state)

    await poll(reached, f"{instance_id} to reach the expected state", TIMEOUT)


async def _has_event(hub: TaskHub, instance_id: str, event_type: EventType, count: int = 1) -> None:
    async def recorded() -> bool:
        events = (await hub.tracking.load_history(instance_id)).events
        return sum(e.event_type is event_type for e in events) >= count

    await poll(recorded, f"{instance_id}'s history to hold {count} {event_type.name}", TIMEOUT)


async def _drive(
    hub: TaskHub, client: TaskHubClient, scenario: Scenario, instance_id: str
) -> tuple[Any, ...]:
    """Run ``scenario`` as ``instance_id``; its end, with the instance ID taken out of the texts."""
    given = scenario.input
    await client.start_new(
        scenario.name,
        instance_id,
        json.dumps(given.replace("{id}", instance_id) if isinstance(given, str) else given),
    )
    if scenario.events:
        ready = scenario.ready
        await _status_is(
            client,
            instance_id,
            lambda s: (
                s.runtime_status is OrchestrationStatus.Running
                and (ready is None or (s.custom_status is not None and json.loads(s.custom_status) == ready))
            ),
        )
        if scenario.suspend:
            await client.suspend(instance_id)
            await _status_is(client, instance_id, lambda s: s.runtime_status is OrchestrationStatus.Suspended)
        for name, payload in scenario.events:
            await client.raise_event(instance_id, name, json.dumps(payload))
        if scenario.suspend:
            await _has_event(hub, instance_id, EventType.EventRaised, len(scenario.events))
            await client.resume(instance_id)
    state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
    status = state.runtime_status.name if state.runtime_status is not None else None
    return tuple(
        (text or "").replace(instance_id, "<id>") for text in (status, state.output, state.custom_status)
    )


async def _run_all(
    hub: TaskHub,
    registry: FunctionRegistry,
    options: DurableTaskOptions,
    scenarios: tuple[Scenario, ...],
    **kw: Any,
) -> list[tuple[Any, ...]]:
    async with _engine(hub, registry, options, **kw) as engine:
        client = TaskHubClient(hub, handoff=engine)
        return list(
            await asyncio.gather(
                *(
                    _drive(hub, client, s, f"{s.name}-{i}-{uuid.uuid4().hex[:6]}")
                    for i, s in enumerate(scenarios)
                )
            )
        )


@pytest.mark.parametrize("app", sorted(APPS))
async def test_warm_continuation_gives_what_a_full_replay_gives(hub: TaskHub, app: str) -> None:
    app_dir, scenarios = APPS[app]
    registry = _load(app_dir)
    options = DurableTaskOptions(hub_name=hub.names.hub)
    shadowed = ShadowedExecutor(registry, options)
    warm = await _run_all(hub, registry, options, scenarios, executor=shadowed)
    assert shadowed.differences == []
    assert shadowed.warm.runs["continued"] > 0, "episodes continued the live orchestrator"
    cold = await _run_all(hub, registry, dataclasses.replace(options, warm_continuation=False), scenarios)
    assert warm == cold
    assert all(status in ("Completed", "Failed") for status, *_ in warm)


async def _started_and_waiting(hub: TaskHub, client: TaskHubClient, instance_id: str) -> None:
    await client.start_new("events_in_order", instance_id, "null")
    await _custom_status(client, instance_id, "waiting for A")


async def test_another_worker_taking_over_replays_then_continues(hub: TaskHub) -> None:
    registry = _load(WARM_APP_DIR)
    options = DurableTaskOptions(hub_name=hub.names.hub)
    instance_id = "handed-over"
    first = DfOrchestrationExecutor.for_options(registry, options)
    async with _engine(hub, registry, options, worker_id="worker-a", executor=first) as engine:
        client = TaskHubClient(hub, handoff=engine)
        await _started_and_waiting(hub, client, instance_id)
        await client.raise_event(instance_id, "A", '"a"')
        await _custom_status(client, instance_id, "waiting for B")
    assert first.runs["continued"] > 0
    second = DfOrchestrationExecutor.for_options(registry, options)
    async with _engine(hub, registry, options, worker_id="worker-b", executor=second) as engine:
        client = TaskHubClient(hub, handoff=engine)
        await client.raise_event(instance_id, "B", '"b"')
        await _custom_status(client, instance_id, "waiting for C")
        assert second.runs == {"replayed": 1}, "the new owner has nothing in memory: it replays"
        for name in ("C", "D"):
            await client.raise_event(instance_id, name, json.dumps(name.lower()))
        state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
    assert json.loads(state.output or "null") == [2, "a", "b", "c", "d"]
    assert second.runs["continued"] >= 1, "then it continues what it replayed"


async def _custom_status(client: TaskHubClient, instance_id: str, expected: Any) -> None:
    await _status_is(
        client, instance_id, lambda s: s.custom_status is not None and json.loads(s.custom_status) == expected
    )


async def test_a_history_written_behind_the_cache_is_replayed_from_storage(hub: TaskHub) -> None:
    registry = _load(WARM_APP_DIR)
    options = DurableTaskOptions(hub_name=hub.names.hub)
    executor = DfOrchestrationExecutor.for_options(registry, options)
    instance_id = "written-behind"
    async with _engine(hub, registry, options, executor=executor) as engine:
        client = TaskHubClient(hub, handoff=engine)
        await _started_and_waiting(hub, client, instance_id)
        assert instance_id in engine.orchestrations.cache
        # Another writer records "A" (as a worker that owned the instance meanwhile would): the
        # cached history and its live orchestrator are now behind storage.
        load = await hub.tracking.load_history(instance_id)
        assert load.execution_id is not None
        episode = [
            OrchestratorStartedEvent(),
            EventRaisedEvent(name="A", input='"a"'),
            OrchestratorCompletedEvent(),
        ]
        await hub.tracking.append_history(
            instance_id, load.execution_id, episode, len(load.events), load.etag
        )
        replays = executor.runs["replayed"]
        await client.raise_event(instance_id, "B", '"b"')
        await _custom_status(client, instance_id, "waiting for C")
        assert executor.runs["replayed"] == replays + 1, "the stale episode failed to commit and replayed"
        for name in ("C", "D"):
            await client.raise_event(instance_id, name, json.dumps(name.lower()))
        state = await client.wait_for_completion(instance_id, timeout=TIMEOUT)
    assert json.loads(state.output or "null") == [2, "a", "b", "c", "d"]


async def test_a_suspended_instance_is_replayed_and_the_switch_turns_continuation_off(hub: TaskHub) -> None:
    registry = _load(WARM_APP_DIR)
    options = DurableTaskOptions(hub_name=hub.names.hub)
    warm = DfOrchestrationExecutor.for_options(registry, options)
    async with _engine(hub, registry, options, executor=warm) as engine:
        client = TaskHubClient(hub, handoff=engine)
        end = await _drive(hub, client, SUSPENDED, "suspended")
    assert end[0] == "Completed"
    suspended_at = warm.runs["replayed"]
    assert suspended_at >= 2, "the first episode after the suspension replayed, and each after it"
    off = DfOrchestrationExecutor.for_options(registry, dataclasses.replace(options, warm_continuation=False))
    async with _engine(hub, registry, options, executor=off) as engine:
        client = TaskHubClient(hub, handoff=engine)
        assert await _drive(hub, client, Scenario("fan_in_then_race"), "off") == await _drive(
            hub, client, Scenario("fan_in_then_race"), "off-2"
        )
    assert off.runs["continued"] == 0 and off.runs["replayed"] >= 3


T0 = datetime(2026, 1, 1, tzinfo=UTC)


class _Chain:
    """The history of an engine_app orchestrator that calls ``double`` in a loop (``chain``,
    ``raises``), episode by episode, as an engine would write it."""

    def __init__(self, name: str = "chain", instance_id: str = "chain-1") -> None:
        self.name = name
        self.instance_id = instance_id
        instance = OrchestrationInstance(instance_id, "e1")
        self.events: list[HistoryEvent] = [
            OrchestratorStartedEvent(timestamp=T0),
            ExecutionStartedEvent(timestamp=T0, orchestration_instance=instance, name=name, input="1"),
        ]
        self.new_events_start = 0

    def request(self) -> ExecutionRequest:
        return ExecutionRequest(self.name, self.instance_id, list(self.events), self.new_events_start)

    def next_episode(self, run: OrchestratorRun, *extra: HistoryEvent) -> None:
        """Record what ``run`` scheduled, then the next episode: its result and ``extra`` events."""
        (event_id,) = [
            i for i in run.allocations if i >= sum(isinstance(e, TaskScheduledEvent) for e in self.events)
        ]
        at = T0 + timedelta(seconds=len(self.events))
        self.events += [
            TaskScheduledEvent(event_id=event_id, timestamp=at, name="double"),
            OrchestratorCompletedEvent(timestamp=at),
        ]
        self.new_events_start = len(self.events)
        result = json.loads(run.allocations[event_id].input or "null") * 2
        self.events += [
            OrchestratorStartedEvent(timestamp=at),
            *extra,
            TaskCompletedEvent(task_scheduled_id=event_id, result=json.dumps(result), timestamp=at),
        ]


def _full_replay(registry: FunctionRegistry, request: ExecutionRequest) -> OrchestratorRun:
    executor = DfOrchestrationExecutor(registry, warm=False)
    return executor.execute(request, executor.new_memo())


def test_each_episode_continues_the_live_orchestrator_and_matches_a_full_replay(
    registry: FunctionRegistry,
) -> None:
    executor = DfOrchestrationExecutor(registry)
    memo = executor.new_memo()
    chain = _Chain()
    run = executor.execute(chain.request(), memo)
    for _ in range(5):
        chain.next_episode(run)
        run = executor.execute(chain.request(), memo)
        assert run == _full_replay(registry, chain.request())
    assert run.done and run.output == "32"
    assert executor.runs == {"replayed": 1, "continued": 5}


def test_events_other_than_those_seen_are_replayed(registry: FunctionRegistry) -> None:
    executor = DfOrchestrationExecutor(registry)
    memo = executor.new_memo()
    chain = _Chain()
    chain.next_episode(executor.execute(chain.request(), memo))
    chain.next_episode(executor.execute(chain.request(), memo))
    # Storage now holds another first result than the one the live orchestrator took.
    index, first = next((i, e) for i, e in enumerate(chain.events) if isinstance(e, TaskCompletedEvent))
    chain.events[index] = TaskCompletedEvent(task_scheduled_id=0, result="3", timestamp=first.timestamp)
    run = executor.execute(chain.request(), memo)
    assert executor.runs == {"replayed": 2, "continued": 1}
    assert run == _full_replay(registry, chain.request())
    assert run.allocations[1].input == "3"


def test_a_suspension_in_history_replays_every_episode_after_it(registry: FunctionRegistry) -> None:
    executor = DfOrchestrationExecutor(registry)
    memo = executor.new_memo()
    chain = _Chain()
    run = executor.execute(chain.request(), memo)
    chain.next_episode(run, ExecutionSuspendedEvent(timestamp=T0), ExecutionResumedEvent(timestamp=T0))
    run = executor.execute(chain.request(), memo)
    chain.next_episode(run)
    run = executor.execute(chain.request(), memo)
    assert executor.runs == {"replayed": 3}
    assert run == _full_replay(registry, chain.request())


def test_another_orchestrator_function_or_a_failed_run_is_not_continued(registry: FunctionRegistry) -> None:
    executor = DfOrchestrationExecutor(registry)
    memo = executor.new_memo()
    chain = _Chain()
    run = executor.execute(chain.request(), memo)
    chain.next_episode(run)
    reloaded = DfOrchestrationExecutor(_load(ENGINE_APP_DIR))  # the app imported again: new functions
    reloaded.execute(chain.request(), memo)
    assert reloaded.runs == {"replayed": 1}
    failing = _Chain("raises", "raises-1")
    run = executor.execute(failing.request(), memo := executor.new_memo())
    failing.next_episode(run)
    run = executor.execute(failing.request(), memo)
    assert run.failure is not None and "orchestrator gave up" in run.failure.error_message
    assert isinstance(memo, DfExecutionMemo) and memo.live is None, "a failed orchestrator is not kept"


def test_warm_continuation_off_replays_every_episode(registry: FunctionRegistry) -> None:
    executor = DfOrchestrationExecutor(registry, warm=False)
    memo = executor.new_memo()
    chain = _Chain()
    run = executor.execute(chain.request(), memo)
    chain.next_episode(run)
    executor.execute(chain.request(), memo)
    assert executor.runs == {"replayed": 2}


def test_only_a_live_orchestrator_makes_an_episode_cost_just_its_new_events(
    registry: FunctionRegistry,
) -> None:
    executor = DfOrchestrationExecutor(registry)
    memo = executor.new_memo()
    assert executor.events_to_run(memo, 400, 3) == 403
    chain = _Chain()
    executor.execute(chain.request(), memo)
    assert executor.events_to_run(memo, 400, 3) == 3
    off = DfOrchestrationExecutor(registry, warm=False)
    off_memo = off.new_memo()
    off.execute(chain.request(), off_memo)
    assert off.events_to_run(off_memo, 400, 3) == 403
