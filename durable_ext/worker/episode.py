"""An orchestration episode: the consumed messages run through the orchestrator, planned as a
checkpoint (new history events, outbound messages, the Instances update). No storage I/O here."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import datetime

from durable_ext import tracing
from durable_ext.clock import SYSTEM_CLOCK, Clock
from durable_ext.config import DurableTaskOptions
from durable_ext.entities import delivery_event, event_sent_for_call
from durable_ext.executor import (
    ActionKind,
    ExecutionRequest,
    NonDeterminismError,
    OrchestrationExecutor,
    OrchestratorRun,
    ScheduledAction,
    new_actions,
    order_new_events,
    scheduled_event_ids,
    scheduling_event,
)
from durable_ext.history import (
    ContinueAsNewEvent,
    EventRaisedEvent,
    EventSentEvent,
    ExecutionCompletedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionTerminatedEvent,
    FailureDetails,
    GenericEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    ParentInstance,
    SubOrchestrationInstanceCompletedEvent,
    SubOrchestrationInstanceCreatedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskScheduledEvent,
    TimerFiredEvent,
    TraceContext,
)
from durable_ext.invocations import InvocationKind, invocation
from durable_ext.logs import hub_log
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.storage.instances import RowUpdate, update_from_history
from durable_ext.storage.taskhub import TaskHub
from durable_ext.versioning import mismatch_failure
from durable_ext.worker.rewind import rewind_history
from durable_ext.worker.session import Checkpoint, EpisodeResult, Execution, Outbound
from durable_ext.worker.triage import Decisions

logger = logging.getLogger(__name__)

MAX_GENERATIONS_PER_WORK_ITEM = 20
"""Continue-as-new generations run back to back before the rest goes through the queue again."""


class EpisodePlanner:
    """Plans orchestration episodes for one task hub with one executor."""

    def __init__(
        self,
        hub: TaskHub,
        executor: OrchestrationExecutor,
        options: DurableTaskOptions,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``clock`` gives the episodes' time: their history timestamps and timers' delays count from it."""
        self._hub = hub
        self._clock = clock
        self._executor = executor
        self._options = options
        self._hub_name = hub.names.hub
        self._log = hub_log(logger, self._hub_name)

    def plan(self, execution: Execution, decisions: Decisions) -> Checkpoint:
        """The checkpoint of an orchestration episode: the consumed messages' events run through the
        orchestrator (continue-as-new generations back to back, a rewind first)."""
        now = self._clock.now()
        incoming = [m.data.event for m in decisions.consume]
        start = next((e for e in incoming if isinstance(e, ExecutionStartedEvent)), None)
        others = [e for e in incoming if not isinstance(e, ExecutionStartedEvent)]
        replaced_blobs: list[str] = []
        outbound: list[Outbound] = []
        carried: list[HistoryEvent] = []
        """Events of the execution that the episode rewrites from row 0 (a rewind's kept history)."""
        if decisions.rewind is not None:
            assert execution.execution_id is not None
            rewound = rewind_history(
                execution.events, execution.execution_id, decisions.rewind.parent_execution_id
            )
            replaced_blobs = list(execution.blob_names)
            current = Execution(execution.instance_id, rewound.execution_id, rewound.events, execution.etag)
            carried = rewound.events
            started = next((e for e in carried if isinstance(e, ExecutionStartedEvent)), None)
            if started is not None:
                tracing.restart_span(started, decisions.rewind.parent_trace_context)
            fresh = [OrchestratorStartedEvent(timestamp=now), *others]
            first_sequence = 0
            outbound += [
                self._rewind_child(child, rewound.execution_id, decisions.rewind)
                for child in rewound.failed_children
            ]
            self._log.instance(execution.instance_id).info(
                "rewinding execution %s as %s (%d failed sub-orchestrations)",
                execution.execution_id,
                rewound.execution_id,
                len(rewound.failed_children),
            )
        elif start is not None:
            assert start.orchestration_instance is not None
            if execution.events:
                replaced_blobs = list(execution.blob_names)
            current = Execution(
                execution.instance_id, start.orchestration_instance.execution_id, [], execution.etag
            )
            fresh = [OrchestratorStartedEvent(timestamp=now), start, *others]
            first_sequence = 0
        else:
            current = execution
            fresh = [OrchestratorStartedEvent(timestamp=now), *others]
            first_sequence = len(execution.events)
        result = self._run_episode(current, fresh, outbound, now, version_mismatch=decisions.version_mismatch)
        spans = result.spans
        generations = 0
        while result.continued_as_new:
            generations += 1
            replaced_blobs += current.blob_names
            current, fresh = self._next_generation(current, result, now)
            first_sequence = 0
            carried = []
            if generations >= MAX_GENERATIONS_PER_WORK_ITEM:
                # Persist the new generation's start and let a message run it, so one instance that
                # continues as new without ever waiting cannot hold this worker forever.
                new_events = [*fresh, OrchestratorCompletedEvent(timestamp=now)]
                outbound.append(self._wake_up(current))
                result = EpisodeResult(new_events, self._status(current, new_events, None, now), [])
                break
            result = self._run_episode(current, fresh, outbound, now)
            spans += result.spans
        return Checkpoint(
            current,
            [*carried, *result.new_events],
            first_sequence,
            outbound,
            result.update,
            replaced_blobs,
            spans,
        )

    def _next_generation(
        self, execution: Execution, result: EpisodeResult, now: datetime
    ) -> tuple[Execution, list[HistoryEvent]]:
        episode = result.new_events
        finished = [*execution.events, *episode]
        started = next(e for e in finished if isinstance(e, ExecutionStartedEvent))
        ended = next(e for e in episode if isinstance(e, ContinueAsNewEvent))
        new_id = uuid.uuid4().hex
        restarted = ExecutionStartedEvent(
            timestamp=now,
            orchestration_instance=OrchestrationInstance(execution.instance_id, new_id),
            parent_instance=started.parent_instance,
            name=started.name,
            version=started.version,
            input=ended.result,
            tags=started.tags,
            generation=started.generation,
            parent_trace_context=tracing.continued_trace(started),
        )
        carried = [
            EventRaisedEvent(name=e.name, input=e.input, timestamp=e.timestamp)
            for e in (finished[i] for i in result.unconsumed_events)
            if isinstance(e, EventRaisedEvent)
        ]
        nxt = Execution(execution.instance_id, new_id, [], execution.etag)
        return nxt, [OrchestratorStartedEvent(timestamp=now), restarted, *carried]

    def _rewind_child(self, child_id: str, execution_id: str, rewind: ExecutionRewoundEvent) -> Outbound:
        """Rewind a failed sub-orchestration and have it report to the parent's new execution."""
        event = ExecutionRewoundEvent(
            reason=rewind.reason, parent_execution_id=execution_id, instance_id=child_id
        )
        message = MessageData(TaskMessage(event, OrchestrationInstance(child_id, None)))
        return Outbound(self._hub.control_queue_for(child_id), message)

    def _wake_up(self, execution: Execution) -> Outbound:
        """A message that makes the instance run its newest generation in a later work item."""
        message = MessageData(
            TaskMessage(
                GenericEvent(data="continue"),
                OrchestrationInstance(execution.instance_id, execution.execution_id),
            )
        )
        return Outbound(self._hub.control_queue_for(execution.instance_id), message)

    def _run_episode(
        self,
        execution: Execution,
        fresh: list[HistoryEvent],
        outbound: list[Outbound],
        now: datetime,
        *,
        version_mismatch: bool = False,
    ) -> EpisodeResult:
        """Replay with the new events; returns the episode's history events and the Instances update.

        ``version_mismatch`` ends the execution as Failed without running the orchestrator (worker
        versioning's ``Fail`` strategy, versioning.py)."""
        past = execution.events
        started = execution.started or next(e for e in fresh if isinstance(e, ExecutionStartedEvent))
        name = started.name or ""
        if execution.completed is not None:
            # allowReplayingTerminalInstances: record what arrived and rewrite the Instances row
            # from the whole history; the orchestrator has nothing left to run.
            recorded = [*fresh, OrchestratorCompletedEvent(timestamp=now)]
            update = self._status(execution, [*past, *recorded], None, now)
            return EpisodeResult(recorded, update.without("CustomStatus"), [])
        run: OrchestratorRun | None = None
        failure: FailureDetails | None = None
        ended = _ended_without_run(fresh, version_mismatch, now)
        if ended is not None:
            completion: HistoryEvent | None = ended
            failure = ended.failure_details
            episode = [*fresh]
            scheduled: list[ScheduledAction] = []
        else:
            episode, run, failure = self._replay(execution, name, started, fresh)
            known = execution.index.scheduled_ids | scheduled_event_ids(episode).keys()
            scheduled = [] if failure is not None or run is None else new_actions(known, run)
            scheduled = [self._sub_orchestration_defaults(execution, a) for a in scheduled]
            completion = self._completion(run, failure, next_id=_next_event_id(run), now=now)
        orchestration = tracing.orchestration_context(started, now)
        recorded = [self._scheduling_event(execution, a, now, orchestration) for a in scheduled]
        tracing.link_scheduled(orchestration, recorded)
        spans = tracing.task_ends(orchestration, execution.instance_id, past, episode, now, name=name)
        new_events = [*episode, *recorded]
        if completion is not None:
            new_events.append(completion)
            if isinstance(completion, ExecutionCompletedEvent):
                spans += tracing.orchestration_end(started, completion, now)
        new_events.append(OrchestratorCompletedEvent(timestamp=now))
        sender = OrchestrationInstance(execution.instance_id, execution.execution_id)
        episode_number = execution.index.episodes + sum(
            isinstance(e, OrchestratorStartedEvent) for e in new_events
        )
        outbound.extend(
            self._messages(
                sender,
                started,
                list(zip(scheduled, recorded, strict=True)),
                episode_number,
                now,
                orchestration=orchestration,
            )
        )
        if failure is not None:
            # The app's traceback, when it raised, is on the invocation's Executed line.
            self._log.instance(execution.instance_id).warning("%s", failure.error_message)
        if completion is not None and not isinstance(completion, ContinueAsNewEvent):
            outbound.extend(self._to_parent(started, completion, failure))
        update = self._status(execution, new_events, run, now)
        return EpisodeResult(new_events, update, run.unconsumed_events if run is not None else [], spans)

    def _sub_orchestration_defaults(self, execution: Execution, action: ScheduledAction) -> ScheduledAction:
        """What the host fills in of a sub-orchestration df left open: its instance ID
        (``{parent}:{event ID}``) and its version (host.json's ``defaultVersion``)."""
        if action.kind is not ActionKind.SUB_ORCHESTRATION:
            return action
        return dataclasses.replace(
            action,
            instance_id=action.instance_id or f"{execution.instance_id}:{action.event_id}",
            version=self._options.versioning.version_for_new_instance(action.version),
        )

    def _scheduling_event(
        self, execution: Execution, action: ScheduledAction, now: datetime, trace: TraceContext | None
    ) -> HistoryEvent:
        if action.kind in (ActionKind.CALL_ENTITY, ActionKind.SIGNAL_ENTITY):
            assert execution.execution_id is not None
            return event_sent_for_call(
                action,
                instance_id=execution.instance_id,
                execution_id=execution.execution_id,
                timestamp=now,
                trace=trace,
            )
        return scheduling_event(action, now, self._options.store_inputs_in_orchestration_history)

    def _replay(
        self, execution: Execution, name: str, started: ExecutionStartedEvent, fresh: list[HistoryEvent]
    ) -> tuple[list[HistoryEvent], OrchestratorRun | None, FailureDetails | None]:
        if not self._executor.has_orchestrator(name):
            return (
                fresh,
                None,
                FailureDetails(
                    error_type="FunctionNotFound",
                    error_message=self._executor.missing_orchestrator_message(name),
                ),
            )
        if execution.memo is None:
            execution.memo = self._executor.new_memo()
        past = execution.events
        parent = (
            started.parent_instance.orchestration_instance.instance_id
            if started.parent_instance and started.parent_instance.orchestration_instance
            else None
        )
        request = ExecutionRequest(name, execution.instance_id, [*past, *fresh], len(past), parent)
        try:
            # One episode is one invocation of the orchestrator function, however many runs it takes.
            with invocation(name, InvocationKind.ORCHESTRATOR):
                run = self._executor.execute(request, execution.memo)
                ordered = [fresh[0], *order_new_events(fresh[1:], run.allocations)]
                if ordered != fresh:
                    # A second run over the reordered events, which numbers retry steps as history will.
                    reordered = dataclasses.replace(request, events=[*past, *ordered])
                    run = self._executor.execute(reordered, execution.memo)
            return ordered, run, run.failure
        except NonDeterminismError as exc:
            self._log.instance(execution.instance_id).error("%s", exc)
            return (
                fresh,
                None,
                FailureDetails(error_type="NonDeterministicOrchestrationError", error_message=str(exc)),
            )

    def _completion(
        self, run: OrchestratorRun | None, failure: FailureDetails | None, *, next_id: int, now: datetime
    ) -> HistoryEvent | None:
        if failure is not None:
            # The extension serializes exceptions rather than writing FailureDetails, so the failure
            # text is the Result, and the Instances row's Output (durable_ext/failures.py).
            return ExecutionCompletedEvent(
                event_id=next_id,
                timestamp=now,
                orchestration_status=OrchestrationStatus.Failed,
                result=failure.error_message,
            )
        if run is None or not run.done:
            return None
        if run.continue_as_new:
            return ContinueAsNewEvent(event_id=next_id, timestamp=now, result=run.continue_as_new_input)
        return ExecutionCompletedEvent(
            event_id=next_id,
            timestamp=now,
            orchestration_status=OrchestrationStatus.Completed,
            result=run.output,
        )

    def _messages(
        self,
        sender: OrchestrationInstance,
        started: ExecutionStartedEvent,
        scheduled: list[tuple[ScheduledAction, HistoryEvent]],
        episode: int,
        now: datetime,
        *,
        orchestration: TraceContext | None,
    ) -> list[Outbound]:
        """The messages of what the episode scheduled; ``orchestration`` is its span's trace context."""
        name = started.name or ""
        out: list[Outbound] = []
        for action, recorded in scheduled:
            if isinstance(recorded, EventSentEvent) and recorded.instance_id is not None:
                # Entity requests address the entity's current execution, whichever it is.
                target = OrchestrationInstance(recorded.instance_id, None)
                delivered = MessageData(
                    TaskMessage(delivery_event(recorded), target), episode=episode, sender=sender
                )
                out.append(Outbound(self._hub.control_queue_for(recorded.instance_id), delivered))
                continue
            if action.kind in (ActionKind.ACTIVITY, ActionKind.CALL_HTTP):
                assert isinstance(recorded, TaskScheduledEvent)
                event: HistoryEvent = TaskScheduledEvent(
                    event_id=action.event_id,
                    timestamp=now,
                    name=action.name,
                    version="",
                    input=action.input,
                    parent_trace_context=recorded.parent_trace_context,
                )
                out.append(
                    Outbound(
                        self._hub.work_item_queue,
                        MessageData(TaskMessage(event, sender), episode=episode, sender=sender),
                    )
                )
            elif action.kind is ActionKind.TIMER:
                assert action.fire_at is not None
                fired = TimerFiredEvent(timer_id=action.event_id, fire_at=action.fire_at, timestamp=now)
                # A timer df did not split (a retry's wait) hops towards its time: triage sends it
                # round again when it arrives early.
                delay = min(action.fire_at - now, self._options.storage_provider.max_timer_delay)
                queue = self._hub.control_queue_for(sender.instance_id)
                out.append(
                    Outbound(
                        queue, MessageData(TaskMessage(fired, sender), episode=episode, sender=sender), delay
                    )
                )
            elif action.kind is ActionKind.SUB_ORCHESTRATION:
                assert action.instance_id is not None
                assert isinstance(recorded, SubOrchestrationInstanceCreatedEvent)
                child_id = action.instance_id
                child = OrchestrationInstance(child_id, uuid.uuid4().hex)
                start = ExecutionStartedEvent(
                    timestamp=now,
                    orchestration_instance=child,
                    parent_instance=ParentInstance(
                        name=name,
                        orchestration_instance=sender,
                        task_schedule_id=action.event_id,
                        version=started.version or "",
                    ),
                    name=action.name,
                    version=action.version or "",
                    input=action.input,
                    parent_trace_context=tracing.sub_orchestration_parent(orchestration, recorded),
                )
                queue = self._hub.control_queue_for(child_id)
                out.append(
                    Outbound(queue, MessageData(TaskMessage(start, child), episode=episode, sender=sender))
                )
        return out

    def _to_parent(
        self, started: ExecutionStartedEvent, completion: HistoryEvent, failure: FailureDetails | None
    ) -> list[Outbound]:
        parent = started.parent_instance
        if (
            parent is None
            or parent.orchestration_instance is None
            or not isinstance(completion, ExecutionCompletedEvent)
        ):
            return []
        result: HistoryEvent
        if completion.orchestration_status is OrchestrationStatus.Completed:
            result = SubOrchestrationInstanceCompletedEvent(
                task_scheduled_id=parent.task_schedule_id, result=completion.result
            )
        else:
            result = SubOrchestrationInstanceFailedEvent(
                task_scheduled_id=parent.task_schedule_id,
                reason=completion.result
                if completion.failure_details is None
                else str(completion.failure_details),
                details=failure.stack_trace if failure else None,
                failure_details=completion.failure_details,
            )
        target = parent.orchestration_instance
        child = started.orchestration_instance
        return [
            Outbound(
                self._hub.control_queue_for(target.instance_id),
                MessageData(TaskMessage(result, target), sender=child),
            )
        ]

    def _status(
        self,
        execution: Execution,
        new_events: list[HistoryEvent],
        run: OrchestratorRun | None,
        now: datetime,
    ) -> RowUpdate:
        return update_from_history(
            execution.instance_id,
            execution.execution_id,
            new_events,
            self._hub_name,
            now,
            custom_status=run.custom_status if run is not None else None,
        )


def _ended_without_run(
    fresh: list[HistoryEvent], version_mismatch: bool, now: datetime
) -> ExecutionCompletedEvent | None:
    """The end of an execution that does not run the orchestrator: a version this worker must fail
    (DurableTask.Core's ``VersionMismatch`` failure, checked before anything else), or a terminate."""
    if version_mismatch:
        return ExecutionCompletedEvent(
            timestamp=now, orchestration_status=OrchestrationStatus.Failed, failure_details=mismatch_failure()
        )
    terminated = next((e for e in fresh if isinstance(e, ExecutionTerminatedEvent)), None)
    if terminated is None:
        return None
    return ExecutionCompletedEvent(
        timestamp=now, orchestration_status=OrchestrationStatus.Terminated, result=terminated.input
    )


def _next_event_id(run: OrchestratorRun | None) -> int:
    return max(run.allocations, default=-1) + 1 if run is not None else 0
