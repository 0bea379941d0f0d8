"""Triage on its own, without storage: what each message of a batch means for the next episode."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from itertools import count

from durable_ext.entities import call_request_id
from durable_ext.history import (
    EventRaisedEvent,
    EventSentEvent,
    ExecutionCompletedEvent,
    ExecutionResumedEvent,
    ExecutionRewoundEvent,
    ExecutionStartedEvent,
    ExecutionSuspendedEvent,
    ExecutionTerminatedEvent,
    HistoryEvent,
    OrchestrationInstance,
    OrchestrationStatus,
    OrchestratorStartedEvent,
    ParentInstance,
    TaskCompletedEvent,
    TaskScheduledEvent,
    TimerFiredEvent,
    distinct_utc_now,
    utc_now,
)
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.storage.queues import ReceivedMessage
from durable_ext.storage.tracking import InstanceState
from durable_ext.worker.session import Execution
from durable_ext.worker.triage import (
    NO_HISTORY_DEQUEUE_LIMIT,
    START_ROW_DEQUEUE_LIMIT,
    Decisions,
    triage,
)

ID = "triaged"
EXECUTION = "e1"
NOW = utc_now()
_ids = count()


def message(event: HistoryEvent, execution: str | None = EXECUTION, dequeues: int = 1) -> ReceivedMessage:
    data = MessageData(TaskMessage(event, OrchestrationInstance(ID, execution)))
    return ReceivedMessage(data, "q", f"m{next(_ids)}", "receipt", dequeues, NOW, None)


def started(execution: str = EXECUTION) -> ExecutionStartedEvent:
    return ExecutionStartedEvent(
        orchestration_instance=OrchestrationInstance(ID, execution), name="orch", input="null"
    )


def running(*more: HistoryEvent) -> Execution:
    return Execution(ID, EXECUTION, [OrchestratorStartedEvent(), started(), *more], None)


def decide(
    history: Execution, *messages: ReceivedMessage, row: InstanceState | None = None, replay: bool = False
) -> Decisions:
    return triage(history, messages, row, now=NOW, replay_terminal=replay, hub_name="H")


def row_for(execution: str, status: OrchestrationStatus = OrchestrationStatus.Pending) -> InstanceState:
    return InstanceState(ID, execution_id=execution, runtime_status=status)


def test_a_client_start_runs_once_its_row_names_it_and_waits_until_then() -> None:
    empty = Execution(ID, None, [], None)
    start = message(started())
    assert decide(empty, start, row=row_for(EXECUTION)).consume == [start]
    assert decide(empty, start, row=None).abandon == [start]
    late = message(started(), dequeues=START_ROW_DEQUEUE_LIMIT)
    assert decide(empty, late, row=None).discard == [late]
    assert decide(empty, start, row=row_for(EXECUTION, OrchestrationStatus.Terminated)).discard == [start]


def test_a_redelivered_start_is_dropped_and_a_pending_row_repaired() -> None:
    again = message(started())
    decisions = decide(running(), again, row=row_for(EXECUTION))
    assert decisions.discard == [again] and decisions.repair


def test_a_second_start_in_one_batch_waits_for_the_next_episode() -> None:
    first, second = message(started("e1")), message(started("e2"), execution="e2")
    rows = row_for("e1")
    decisions = decide(Execution(ID, None, [], None), first, second, row=rows)
    assert decisions.consume == [first]
    assert decisions.discard == [second], "the row names e1 at the same generation: e2 lost the race"
    sub_start = ExecutionStartedEvent(
        orchestration_instance=OrchestrationInstance(ID, "e3"),
        parent_instance=ParentInstance(
            name="parent", orchestration_instance=OrchestrationInstance("p", "pe")
        ),
    )
    child_first, child_second = message(started("e1")), message(sub_start, execution="e3")
    decisions = decide(Execution(ID, None, [], None), child_first, child_second, row=rows)
    assert decisions.later == [child_second]


def test_messages_before_any_start_wait_then_go_and_a_terminate_marks_the_row() -> None:
    empty = Execution(ID, None, [], None)
    event = message(EventRaisedEvent(name="x"))
    assert decide(empty, event).abandon == [event]
    stale = message(EventRaisedEvent(name="x"), dequeues=NO_HISTORY_DEQUEUE_LIMIT + 1)
    assert decide(empty, stale).discard == [stale]
    # An accepted start that has not run (say, left for a worker of its version) keeps them waiting.
    assert decide(empty, stale, row=row_for(EXECUTION)).abandon == [stale]
    terminate = ExecutionTerminatedEvent(input='"stop"')
    decisions = decide(empty, message(terminate))
    assert decisions.terminated_before_start is terminate


def test_results_are_taken_once_and_only_after_their_scheduling_event() -> None:
    history = running(TaskScheduledEvent(event_id=0, name="a"))
    first = message(TaskCompletedEvent(task_scheduled_id=0, result="1"))
    duplicate = message(TaskCompletedEvent(task_scheduled_id=0, result="1"))
    unknown = message(TaskCompletedEvent(task_scheduled_id=7, result="1"))
    decisions = decide(history, first, duplicate, unknown)
    assert decisions.consume == [first]
    assert decisions.discard == [duplicate]
    assert decisions.abandon == [unknown]
    recorded = running(TaskScheduledEvent(event_id=0, name="a"), TaskCompletedEvent(task_scheduled_id=0))
    assert decide(recorded, first).discard == [first]


def test_a_delivered_event_history_holds_is_dropped_and_a_second_one_of_the_same_name_taken() -> None:
    go = EventRaisedEvent(name="go", input='"x"', timestamp=distinct_utc_now())
    copy = message(dataclasses.replace(go))
    decisions = decide(running(go), copy)
    assert decisions.discard == [copy] and not decisions.consume
    again = message(EventRaisedEvent(name="go", input='"x"', timestamp=distinct_utc_now()))
    assert decide(running(go), again).consume == [again], "raised a second time: a second event"
    twice = message(dataclasses.replace(go))
    decisions = decide(running(), copy, twice)
    assert decisions.consume == [copy] and decisions.discard == [twice]
    suspend = ExecutionSuspendedEvent(reason="r", timestamp=distinct_utc_now())
    resume = ExecutionResumedEvent(reason="r", timestamp=distinct_utc_now())
    late = message(dataclasses.replace(suspend))
    assert decide(running(suspend, resume), late).discard == [late], "a stale suspend must not re-suspend"


def test_a_second_response_to_one_entity_call_is_dropped() -> None:
    # An entity that died before it recorded an operation runs it again and answers again, with a
    # timestamp (and maybe a result) of its own: the orchestration already took the first answer.
    request = call_request_id(ID, EXECUTION, 0)
    sent = EventSentEvent(event_id=0, instance_id="@counter@a", name="op", input="{}")
    answered = running(sent, EventRaisedEvent(name=request, input='{"result":"1"}'))
    second = message(EventRaisedEvent(name=request, input='{"result":"2"}'))
    assert decide(answered, second).discard == [second]
    other = message(EventRaisedEvent(name=call_request_id(ID, EXECUTION, 1), input='{"result":"1"}'))
    assert decide(answered, other).consume == [other]


def test_client_event_timestamps_never_repeat() -> None:
    stamps = [distinct_utc_now() for _ in range(10_000)]
    assert len(set(stamps)) == len(stamps) and stamps == sorted(stamps)


def test_messages_for_a_replaced_execution_are_dropped() -> None:
    old = message(EventRaisedEvent(name="x"), execution="e0")
    assert decide(running(), old).discard == [old]
    untargeted = message(EventRaisedEvent(name="x"), execution=None)
    assert decide(running(), untargeted).consume == [untargeted]


def test_an_ended_instance_drops_late_messages_unless_replaying_terminal_instances() -> None:
    ended = running(ExecutionCompletedEvent(orchestration_status=OrchestrationStatus.Completed))
    late = message(EventRaisedEvent(name="x"))
    decisions = decide(ended, late)
    assert decisions.discard == [late] and decisions.repair
    assert decide(ended, late, replay=True).consume == [late]
    replayed = running(
        late.data.event, ExecutionCompletedEvent(orchestration_status=OrchestrationStatus.Completed)
    )
    assert decide(replayed, late, replay=True).discard == [late], "recorded once, even after the end"
    stop = ExecutionTerminatedEvent(input='"stop"', timestamp=distinct_utc_now())
    terminated = running(stop, ExecutionCompletedEvent(orchestration_status=OrchestrationStatus.Terminated))
    again = message(dataclasses.replace(stop))
    assert decide(terminated, again, replay=True).discard == [again]


def test_an_early_timer_goes_round_again() -> None:
    early = message(TimerFiredEvent(timer_id=0, fire_at=NOW + timedelta(days=1)))
    history = running(TaskScheduledEvent(event_id=0))
    assert decide(history, early).rehop == [early]


def test_only_a_failed_execution_is_rewound_and_what_follows_waits() -> None:
    failed = running(ExecutionCompletedEvent(orchestration_status=OrchestrationStatus.Failed))
    rewind, after = message(ExecutionRewoundEvent(reason="fix")), message(EventRaisedEvent(name="x"))
    decisions = decide(failed, rewind, after)
    assert decisions.consume == [rewind] and decisions.rewind is not None
    assert decisions.later == [after]
    assert decide(running(), rewind).discard == [rewind]
