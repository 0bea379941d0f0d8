"""An entity episode: a batch of queued operations run through the entity, planned as a checkpoint
that writes the new state as a fresh execution (docs/storage-protocol.md §2.7)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from durable_ext import tracing
from durable_ext.app_loader import FunctionKind, FunctionRegistry
from durable_ext.clock import SYSTEM_CLOCK, Clock
from durable_ext.config import DurableTaskOptions
from durable_ext.entities import (
    EntityBatchResult,
    EntityRequest,
    OperationOutcome,
    SchedulerState,
    entity_status_json,
    parse_entity_instance_id,
    request_from_event,
    response_event,
    run_entity_batch,
)
from durable_ext.history import (
    EventRaisedEvent,
    ExecutionStartedEvent,
    OrchestrationInstance,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
)
from durable_ext.invocations import InvocationKind, invocation
from durable_ext.logs import hub_log
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.storage.instances import RowUpdate, entity_update
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.session import Checkpoint, Execution, Outbound
from durable_ext.worker.triage import Decisions

logger = logging.getLogger(__name__)

_RECENT_REQUESTS_KEY = "durableExtRecentRequests"
"""Member of the entity scheduler's ``sorter`` listing request IDs already applied (.NET ignores it)."""
_RECENT_REQUESTS_KEPT = 1000
"""Enough to cover the batches whose messages a crash can leave undeleted."""


class EntityPlanner:
    """Plans entity episodes for one task hub."""

    def __init__(
        self,
        hub: TaskHub,
        registry: FunctionRegistry,
        options: DurableTaskOptions,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``clock`` gives the episodes' time (history timestamps, when delayed signals are due)."""
        self._hub = hub
        self._clock = clock
        self._registry = registry
        self._options = options
        self._hub_name = hub.names.hub
        self._log = hub_log(logger, self._hub_name)
        self._reported_disabled: set[str] = set()

    def plan(
        self, execution: Execution, messages: list[ReceivedMessage]
    ) -> tuple[Decisions, Checkpoint | None]:
        """One batch of entity operations: run them, answer callers, store the new state.

        The state lives in the Input of a fresh three-row execution written over the old one, as the
        Durable Functions entity scheduler does it (docs/storage-protocol.md §2.7).
        """
        if self._disabled(execution.instance_id):
            # As under the Durable Functions extension, a disabled entity's messages stay queued.
            return Decisions(abandon=list(messages)), None
        now = self._clock.now()
        decisions = Decisions()
        started = execution.started
        state = SchedulerState.from_json_text(started.input if started is not None else None)
        recent: list[str] = list(state.sorter.get(_RECENT_REQUESTS_KEY, []))
        requests: list[EntityRequest] = []
        for message in messages:
            event = message.data.event
            request = request_from_event(event) if isinstance(event, EventRaisedEvent) else None
            if request is None:
                decisions.discard.append(message)  # "continue" wake-ups and stray messages
            elif request.id in recent or any(r.id == request.id for r in requests):
                decisions.discard.append(message)  # applied before a crash kept its message alive
            elif request.scheduled_time is not None and request.scheduled_time > now:
                decisions.rehop.append(message)
            else:
                requests.append(request)
                decisions.consume.append(message)
        if not requests and not state.queue:
            if decisions.discard and started is not None and execution.execution_id is not None:
                # Redelivered operations that were applied before a crash: their history write
                # happened, the Instances write may not have. Rewrite the row from history (behind
                # the sentinel ETag, so only while this worker still owns the entity).
                update = self._entity_status(execution, execution.execution_id, state, now)
                return decisions, Checkpoint(execution, [], len(execution.events), [], update, [])
            return decisions, None
        name, _ = parse_entity_instance_id(execution.instance_id)
        function = self._registry.get(name, FunctionKind.ENTITY)
        with invocation(function.function_name if function is not None else name, InvocationKind.ENTITY):
            result = run_entity_batch(
                function.callable if function is not None else _missing_entity(name),
                execution.instance_id,
                state,
                requests,
                self._options.max_entity_operation_batch_size,
            )
        spans = (
            tracing.entity_operations(execution.instance_id, name, _traced(result.outcomes, now))
            if tracing.enabled()
            else []
        )
        done = [outcome.request.id for outcome in result.outcomes]
        result.state.sorter[_RECENT_REQUESTS_KEY] = [*recent, *done][-_RECENT_REQUESTS_KEPT:]
        sender = OrchestrationInstance(execution.instance_id, execution.execution_id)
        outbound = self._entity_messages(sender, result, now)
        new_execution = uuid.uuid4().hex
        restarted = ExecutionStartedEvent(
            timestamp=now,
            orchestration_instance=OrchestrationInstance(execution.instance_id, new_execution),
            name=execution.instance_id,
            version="",
            input=result.state.to_json_text(),
        )
        events = [
            OrchestratorStartedEvent(timestamp=now),
            restarted,
            OrchestratorCompletedEvent(timestamp=now),
        ]
        update = self._entity_status(execution, new_execution, result.state, now)
        current = Execution(execution.instance_id, new_execution, [], execution.etag)
        return decisions, Checkpoint(current, events, 0, outbound, update, list(execution.blob_names), spans)

    def _disabled(self, instance_id: str) -> bool:
        name, _ = parse_entity_instance_id(instance_id)
        function = self._registry.get(name, FunctionKind.ENTITY)
        if function is None or not function.disabled:
            return False
        if function.function_name not in self._reported_disabled:
            self._reported_disabled.add(function.function_name)
            self._log.warning(
                "entity %s is disabled (app setting AzureWebJobs.%s.Disabled): its operations wait in the"
                " control queues, and orchestrations calling it with them, until a worker that has it"
                " enabled takes them",
                function.function_name,
                function.function_name,
            )
        return True

    def _entity_status(
        self, execution: Execution, execution_id: str, state: SchedulerState, now: datetime
    ) -> RowUpdate:
        started = execution.started
        return entity_update(
            execution.instance_id,
            execution_id,
            scheduler_state=state.to_json_text(),
            entity_status=entity_status_json(state),
            created=started.timestamp if started is not None else now,
            now=now,
            hub_name=self._hub_name,
        )

    def _entity_messages(
        self, sender: OrchestrationInstance, result: EntityBatchResult, now: datetime
    ) -> list[Outbound]:
        out: list[Outbound] = []
        for outcome in result.outcomes:
            request = outcome.request
            if request.is_signal or not request.parent_instance_id:
                continue
            caller = OrchestrationInstance(request.parent_instance_id, request.parent_execution_id)
            answer = MessageData(TaskMessage(response_event(request, outcome), caller), sender=sender)
            out.append(Outbound(self._hub.control_queue_for(caller.instance_id), answer))
        for signal in result.signals:
            request = signal.to_request(uuid.uuid4().hex, sender.instance_id)
            target = OrchestrationInstance(signal.target_instance_id, None)
            message = MessageData(TaskMessage(request.to_event(), target), sender=sender)
            out.append(Outbound(self._hub.control_queue_for(signal.target_instance_id), message))
        if result.state.queue:
            # More operations wait than one batch takes: wake this entity again for the rest.
            wake = EventRaisedEvent(name="continue", timestamp=now)
            message = MessageData(
                TaskMessage(wake, OrchestrationInstance(sender.instance_id, None)), sender=sender
            )
            out.append(Outbound(self._hub.control_queue_for(sender.instance_id), message))
        return out


def _traced(outcomes: list[OperationOutcome], batch_started: datetime) -> list[tracing.EntityOperation]:
    """The batch's operations as their spans need them; an operation df did not time ran at the
    batch's start."""
    return [
        tracing.EntityOperation(
            operation=outcome.request.operation or "",
            is_signal=outcome.request.is_signal,
            parent=outcome.request.parent_trace_context,
            requested=outcome.request.request_time,
            started=batch_started
            if outcome.started_ms is None
            else tracing.from_epoch_ms(outcome.started_ms),
            duration=timedelta(milliseconds=outcome.duration_ms),
            error=outcome.error if outcome.is_error else None,
        )
        for outcome in outcomes
    ]


def _missing_entity(name: str) -> Callable[[str], str]:
    """Stands in for an entity function the app does not have: every operation fails with this."""

    def missing(_batch: str) -> str:
        raise LookupError(f"The entity function '{name}' doesn't exist.")

    return missing
