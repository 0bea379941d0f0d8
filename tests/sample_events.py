"""One fully populated event of every history event class, for round-trip tests."""

from __future__ import annotations

from datetime import UTC, datetime

from durable_ext.history import (
    EVENT_CLASSES,
    ContinueAsNewEvent,
    EventRaisedEvent,
    EventSentEvent,
    EventType,
    ExecutionCompletedEvent,
    ExecutionResumedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    ExecutionTerminatedEvent,
    FailureDetails,
    GenericEvent,
    HistoryEvent,
    HistoryStateEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    ParentInstance,
    SubOrchestrationInstanceCompletedEvent,
    SubOrchestrationInstanceCreatedEvent,
    SubOrchestrationInstanceFailedEvent,
    TaskCompletedEvent,
    TaskFailedEvent,
    TaskScheduledEvent,
    TimerCreatedEvent,
    TimerFiredEvent,
    TraceContext,
)

T0 = datetime(2026, 3, 24, 20, 53, 5, 909351, tzinfo=UTC)
FIRE_AT = datetime(2026, 3, 25, 8, 0, 0, tzinfo=UTC)
TRACE = TraceContext(
    trace_parent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    trace_state="k=v",
    id="b7ad6b7169203331",
    span_id="b7ad6b7169203331",
    activity_start_time=T0,
)
FAILURE = FailureDetails(
    error_type="ValueError",
    error_message="bad input",
    stack_trace='File "x.py", line 1',
    inner_failure=FailureDetails(error_type="KeyError", error_message="'k'"),
    is_non_retriable=True,
    properties={"attempt": 3},
)
INSTANCE = OrchestrationInstance("order-42", "3f1c0a9e6b7d4c2a9e8f7a6b5c4d3e2f")


def sample_events() -> dict[EventType, HistoryEvent]:
    """Every event class with every member set to a non-default value."""
    events: list[HistoryEvent] = [
        ExecutionStartedEvent(
            event_id=-1,
            is_played=True,
            timestamp=T0,
            orchestration_instance=INSTANCE,
            parent_instance=ParentInstance(
                name="parent",
                orchestration_instance=OrchestrationInstance("p-1", "e" * 32),
                task_schedule_id=7,
                version="1.0",
            ),
            name="hello_sequence",
            version="2.0",
            input='{"city": "Tokyo", "emoji": "東京 ✓"}',
            tags={"owner": "team-a"},
            correlation="corr",
            parent_trace_context=TRACE,
            scheduled_start_time=FIRE_AT,
            generation=3,
            generate_new_trace=True,
        ),
        ExecutionCompletedEvent(
            event_id=9,
            timestamp=T0,
            orchestration_status=OrchestrationStatus.Failed,
            result="oops",
            failure_details=FAILURE,
        ),
        ContinueAsNewEvent(event_id=10, timestamp=T0, result='{"next": 1}'),
        ExecutionTerminatedEvent(timestamp=T0, input='"stopped by admin"'),
        ExecutionSuspendedEvent(timestamp=T0, reason="maintenance"),
        ExecutionResumedEvent(timestamp=T0, reason="done"),
        ExecutionRewoundEvent(
            timestamp=T0,
            reason="retry",
            parent_execution_id="a" * 32,
            instance_id="order-42",
            parent_trace_context=TRACE,
        ),
        TaskScheduledEvent(
            event_id=0,
            timestamp=T0,
            name="say_hello",
            version="",
            input='"Tokyo"',
            parent_trace_context=TRACE,
            tags={"t": "1"},
        ),
        TaskCompletedEvent(event_id=-1, timestamp=T0, task_scheduled_id=0, result='"Hello Tokyo!"'),
        TaskFailedEvent(
            timestamp=T0, task_scheduled_id=1, reason="boom", details="trace", failure_details=FAILURE
        ),
        SubOrchestrationInstanceCreatedEvent(
            event_id=2,
            timestamp=T0,
            name="child",
            version="",
            instance_id="order-42:child",
            input="[1,2]",
            client_span_id="span",
            tags={"a": "b"},
        ),
        SubOrchestrationInstanceCompletedEvent(timestamp=T0, task_scheduled_id=2, result="3"),
        SubOrchestrationInstanceFailedEvent(
            timestamp=T0, task_scheduled_id=2, reason="child failed", details="d", failure_details=FAILURE
        ),
        TimerCreatedEvent(event_id=3, timestamp=T0, fire_at=FIRE_AT),
        TimerFiredEvent(timestamp=T0, timer_id=3, fire_at=FIRE_AT),
        OrchestratorStartedEvent(timestamp=T0),
        OrchestratorCompletedEvent(timestamp=T0, is_played=True),
        EventSentEvent(event_id=4, timestamp=T0, instance_id="@counter@k", name="op", input='{"id":"x"}'),
        EventRaisedEvent(timestamp=T0, name="Approval", input="true", parent_trace_context=TRACE),
        GenericEvent(timestamp=T0, data="wake up"),
        HistoryStateEvent(timestamp=T0, state={"OrchestrationStatus": 0, "Name": "x"}),
    ]
    by_type = {event.event_type: event for event in events}
    assert set(by_type) == set(EVENT_CLASSES), "a sample is missing for some event class"
    return by_type
