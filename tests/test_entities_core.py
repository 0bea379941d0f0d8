"""Entity core without storage: IDs, message JSON, scheduler state, batches through df, and the
orchestrator side of call_entity/signal_entity replayed by df itself."""

from __future__ import annotations

import json
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.durable_functions.models.entities.ResponseMessage import ResponseMessage

from durable_ext.app_loader import FunctionKind, FunctionRegistry, load_app
from durable_ext.entities import (
    EntityRequest,
    EntityResponse,
    OperationOutcome,
    SchedulerState,
    call_request_id,
    delivery_event,
    entity_instance_id,
    entity_status_json,
    event_sent_for_call,
    parse_entity_instance_id,
    request_event,
    request_from_event,
    response_event,
    run_entity_batch,
)
from durable_ext.errors import MessageFormatError, ValidationError
from durable_ext.executor import (
    ActionKind,
    OrchestratorRun,
    ScheduledAction,
    new_actions,
    scheduled_event_ids,
)
from durable_ext.history import (
    EventRaisedEvent,
    ExecutionStartedEvent,
    FailureDetails,
    HistoryEvent,
    OrchestrationInstance,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
)
from durable_ext.replay import run_orchestrator

APP_DIR = Path(__file__).parent / "apps" / "entity_app"
COUNTER = "@counter@c1"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry() -> FunctionRegistry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_app(APP_DIR)


@pytest.fixture(scope="module")
def counter(registry: FunctionRegistry) -> Callable[..., Any]:
    function = registry.get("Counter", FunctionKind.ENTITY)
    assert function is not None
    return function.callable


def _op(operation: str, value: Any = None, *, signal: bool = True) -> EntityRequest:
    """A request as df apps send it: the input double-encoded."""
    return EntityRequest(
        id=str(uuid.uuid4()),
        operation=operation,
        input=None if value is None else json.dumps(json.dumps(value)),
        is_signal=signal,
        parent_instance_id=None if signal else "orch",
        parent_execution_id=None if signal else "exec",
    )


# --- entity IDs --------------------------------------------------------------------------------------


def test_entity_instance_id_lowercases_the_name_and_keeps_the_key() -> None:
    assert entity_instance_id("Counter", "Key1") == "@counter@Key1"
    assert parse_entity_instance_id("@counter@Key1") == ("counter", "Key1")
    # As in .NET's EntityId: the key is everything after the second '@'.
    assert parse_entity_instance_id(entity_instance_id("a", "b@c")) == ("a", "b@c")


@pytest.mark.parametrize(("name", "key"), [("", "k"), ("a@b", "k"), ("counter", "")])
def test_entity_instance_id_rejects_bad_parts(name: str, key: str) -> None:
    with pytest.raises(ValidationError):
        entity_instance_id(name, key)


@pytest.mark.parametrize("instance_id", ["counter@k", "@counter", "@@k", "@counter@", "", "@"])
def test_parse_entity_instance_id_rejects_non_entity_ids(instance_id: str) -> None:
    with pytest.raises(ValidationError, match="not an entity instance ID"):
        parse_entity_instance_id(instance_id)


# --- JSON shapes -------------------------------------------------------------------------------------


def test_request_json_has_dotnet_field_names_and_order() -> None:
    request = EntityRequest(
        id="0b5e3c1a-7d0f-5b3e-9a57-2c8e1f4d6a90",
        operation="add",
        input=json.dumps(json.dumps(5)),
        parent_instance_id="orch",
        parent_execution_id="exec",
        timestamp=T0,
    )
    assert request.to_json_text() == (
        '{"op":"add","input":"\\"5\\"","id":"0b5e3c1a-7d0f-5b3e-9a57-2c8e1f4d6a90","parent":"orch",'
        '"parentExecution":"exec","Timestamp":"2024-05-01T12:00:00.123456Z",'
        '"Predecessor":"0001-01-01T00:00:00"}'
    )
    assert EntityRequest.from_json_text(request.to_json_text()) == request


def test_client_signal_json_omits_parent_and_input() -> None:
    request = EntityRequest(id="0b5e3c1a-7d0f-5b3e-9a57-2c8e1f4d6a90", operation="reset", is_signal=True)
    assert json.loads(request.to_json_text()) == {
        "op": "reset",
        "signal": True,
        "id": "0b5e3c1a-7d0f-5b3e-9a57-2c8e1f4d6a90",
        "Timestamp": "0001-01-01T00:00:00",
        "Predecessor": "0001-01-01T00:00:00",
    }
    assert EntityRequest.from_json_text(request.to_json_text()) == request


def test_request_keeps_members_it_does_not_model() -> None:
    # A DTFx.Core lock request: lockset/pos/IsLockRequest/createTrace must survive a read and write.
    text = (
        '{"op":null,"id":"0b5e3c1a-7d0f-5b3e-9a57-2c8e1f4d6a90","parent":"orch","parentExecution":"exec",'
        '"Timestamp":"2024-05-01T12:00:00.1234567Z","Predecessor":"0001-01-01T00:00:00",'
        '"lockset":[{"name":"counter","key":"a"}],"pos":1,"IsLockRequest":true,"createTrace":false}'
    )
    request = EntityRequest.from_json_text(text)
    assert request.operation is None
    assert request.extra["lockset"] == [{"name": "counter", "key": "a"}]
    assert request.timestamp == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert request.predecessor is None
    assert json.loads(request.to_json_text())["lockset"] == [{"name": "counter", "key": "a"}]
    assert list(json.loads(request.to_json_text())) == list(json.loads(text))


def test_request_id_is_normalised_and_required() -> None:
    request = EntityRequest.from_json_text('{"op":"get","id":"0B5E3C1A-7D0F-5B3E-9A57-2C8E1F4D6A90"}')
    assert request.id == "0b5e3c1a-7d0f-5b3e-9a57-2c8e1f4d6a90"  # Guid.ToString(): the response's name
    with pytest.raises(MessageFormatError, match="'id'"):
        EntityRequest.from_json_text('{"op":"get"}')
    with pytest.raises(MessageFormatError, match="not JSON"):
        EntityRequest.from_json_text("op")


def test_response_json_round_trips_and_df_reads_it() -> None:
    ok = EntityResponse(result="8")
    failed = EntityResponse(result='"boom"', exception_type="Error")
    assert ok.to_json_text() == '{"result":"8"}'
    assert failed.to_json_text() == '{"result":"\\"boom\\"","exceptionType":"Error"}'
    for response in (ok, failed):
        assert EntityResponse.from_json_text(response.to_json_text()) == response
        message = ResponseMessage.from_dict(json.loads(response.to_json_text()))
        assert (message.result, message.is_exception) == (response.result, response.is_error)
    detailed = EntityResponse(
        result=None, exception_type="boom", failure_details=FailureDetails("ValueError", "boom")
    )
    assert json.loads(detailed.to_json_text())["failureDetails"]["ErrorType"] == "ValueError"
    assert EntityResponse.from_json_text(detailed.to_json_text()) == detailed


def test_scheduler_state_omits_defaults_but_always_writes_the_sorter() -> None:
    assert SchedulerState().to_json_text() == '{"sorter":{}}'
    for empty in (None, "", "null"):
        assert SchedulerState.from_json_text(empty) == SchedulerState()
    assert SchedulerState(entity_exists=True, state="8").to_json_text() == (
        '{"exists":true,"state":"8","sorter":{}}'
    )


def test_scheduler_state_round_trips_every_member() -> None:
    queued = EntityRequest(id=str(uuid.uuid4()), operation="add", input='"1"', is_signal=True)
    state = SchedulerState(
        entity_exists=True,
        state='{"value":8}',
        queue=[queued],
        locked_by="orch",
        suspended=True,
        sorter={"ReceiveHorizon": "2024-05-01T11:30:00Z"},
    )
    text = state.to_json_text()
    assert list(json.loads(text)) == ["exists", "state", "queue", "lockedBy", "suspended", "sorter"]
    assert json.loads(text)["queue"][0]["op"] == "add"
    assert SchedulerState.from_json_text(text) == state
    with pytest.raises(MessageFormatError):
        SchedulerState.from_json_text('{"queue":{}}')


def test_entity_status_json() -> None:
    assert entity_status_json(SchedulerState()) == "{}"
    assert entity_status_json(SchedulerState(entity_exists=True)) == '{"entityExists":true}'
    busy = SchedulerState(entity_exists=True, queue=[_op("add", 1), _op("get")], locked_by="orch")
    assert entity_status_json(busy) == '{"entityExists":true,"queueSize":2,"lockedBy":"orch"}'


# --- batches -----------------------------------------------------------------------------------------


def test_batch_runs_operations_in_order(counter: Callable[..., Any]) -> None:
    requests = [_op("add", 5), _op("add", 3), _op("get", signal=False)]
    result = run_entity_batch(counter, COUNTER, SchedulerState(), requests, max_batch=10)
    assert (result.state.entity_exists, result.state.state, result.state.queue) == (True, "8", [])
    assert [o.result for o in result.outcomes] == ["null", "null", "8"]
    assert [o.request for o in result.outcomes] == requests
    assert not any(o.is_error for o in result.outcomes)
    assert all(o.duration_ms >= 0 for o in result.outcomes)
    assert result.signals == []


def test_batch_passes_state_in_and_double_decodes_inputs(counter: Callable[..., Any]) -> None:
    state = SchedulerState(entity_exists=True, state="40")
    result = run_entity_batch(counter, COUNTER, state, [_op("add", 2), _op("get")], max_batch=10)
    assert result.state.state == "42"
    assert result.outcomes[1].result == "42"


def test_initial_state_comes_from_the_initializer(counter: Callable[..., Any]) -> None:
    result = run_entity_batch(counter, COUNTER, SchedulerState(), [_op("get", signal=False)], max_batch=1)
    assert result.outcomes[0].result == "0"


def test_failing_operation_fails_alone_and_keeps_what_it_set(counter: Callable[..., Any]) -> None:
    requests = [_op("add", 5), _op("add_then_fail", 100, signal=False), _op("add", 1)]
    result = run_entity_batch(counter, COUNTER, SchedulerState(), requests, max_batch=10)
    assert [o.is_error for o in result.outcomes] == [False, True, False]
    failed = result.outcomes[1]
    assert failed.error == "counter/c1 refuses add_then_fail"
    assert failed.result == json.dumps(failed.error)
    # df semantics: the failing operation's set_state stays (5 + 100), and later operations still run.
    assert result.state.state == "106"


def test_delete_removes_the_entity(counter: Callable[..., Any]) -> None:
    state = SchedulerState(entity_exists=True, state="3")
    result = run_entity_batch(counter, COUNTER, state, [_op("delete")], max_batch=10)
    assert (result.state.entity_exists, result.state.state) == (False, None)
    assert result.state.to_json_text() == '{"sorter":{}}'
    assert entity_status_json(result.state) == "{}"


def test_max_batch_leaves_the_rest_queued(counter: Callable[..., Any]) -> None:
    buffered = _op("add", 1)
    state = SchedulerState(queue=[buffered])
    requests = [_op("add", 2), _op("add", 3), _op("get", signal=False)]
    first = run_entity_batch(counter, COUNTER, state, requests, max_batch=2)
    assert [o.request for o in first.outcomes] == [buffered, requests[0]]
    assert first.state.state == "3"
    assert first.state.queue == requests[1:]
    assert entity_status_json(first.state) == '{"entityExists":true,"queueSize":2}'
    second = run_entity_batch(counter, COUNTER, first.state, [], max_batch=2)
    assert [o.result for o in second.outcomes] == ["null", "6"]
    assert second.state.queue == []
    with pytest.raises(ValidationError):
        run_entity_batch(counter, COUNTER, state, requests, max_batch=0)


def _raises(batch_json: str) -> str:
    raise RuntimeError("worker crashed")


def _wrong_result_count(batch_json: str) -> str:
    return json.dumps({"entityExists": True, "entityState": "999", "results": [], "signals": []})


@pytest.mark.parametrize("broken", [_raises, _wrong_result_count, lambda _: None])
def test_failing_batch_fails_every_operation_and_keeps_the_state(broken: Callable[[str], Any]) -> None:
    state = SchedulerState(entity_exists=True, state="7", sorter={"x": 1})
    requests = [_op("add", 1), _op("get", signal=False), _op("add", 2)]
    result = run_entity_batch(broken, COUNTER, state, requests, max_batch=2)
    assert [o.is_error for o in result.outcomes] == [True, True]
    assert all(o.error and "failed to run a batch" in o.error for o in result.outcomes)
    assert all(o.result == json.dumps(o.error) for o in result.outcomes)
    assert (result.state.entity_exists, result.state.state, result.state.sorter) == (True, "7", {"x": 1})
    assert result.state.queue == requests[2:]


def test_signals_sent_by_an_entity_are_returned() -> None:
    def sends(batch_json: str) -> str:
        batch = json.loads(batch_json)
        assert batch["self"] == {"name": "counter", "key": "c1"}
        signal = {"target": {"name": "Audit", "key": "k"}, "name": "log", "input": '"\\"x\\""'}
        return json.dumps(
            {
                "entityExists": True,
                "entityState": "1",
                "results": [{"isError": False, "duration": 2, "result": "null"}],
                "signals": [signal],
            }
        )

    result = run_entity_batch(sends, COUNTER, SchedulerState(), [_op("add", 1)], max_batch=1)
    [signal] = result.signals
    assert (signal.target_instance_id, signal.operation, signal.input) == ("@audit@k", "log", '"\\"x\\""')
    request = signal.to_request("0b5e3c1a-7d0f-5b3e-9a57-2c8e1f4d6a90", COUNTER)
    assert (request.is_signal, request.parent_instance_id, request.input) == (True, COUNTER, signal.input)
    assert result.outcomes[0].duration_ms == 2.0


# --- events ------------------------------------------------------------------------------------------


def test_request_event_double_encodes_the_input() -> None:
    request_id = str(uuid.uuid4())
    event = request_event(
        COUNTER,
        "add",
        "5",
        request_id=request_id,
        is_signal=True,
        parent_instance_id=None,
        parent_execution_id=None,
        scheduled_time=None,
    )
    assert event.name == "op"
    assert event.input is not None
    assert json.loads(event.input)["input"] == '"5"'
    request = request_from_event(event)
    assert request is not None
    assert (request.id, request.operation, request.is_signal, request.scheduled_time) == (
        request_id,
        "add",
        True,
        None,
    )
    with pytest.raises(ValidationError):
        request_event(
            "orch",
            "add",
            None,
            request_id=request_id,
            is_signal=True,
            parent_instance_id=None,
            parent_execution_id=None,
            scheduled_time=None,
        )


def _delayed(scheduled: datetime, now: datetime) -> EventRaisedEvent:
    return request_event(
        COUNTER,
        "reset",
        None,
        request_id=str(uuid.uuid4()),
        is_signal=True,
        parent_instance_id=None,
        parent_execution_id=None,
        scheduled_time=scheduled,
        now=now,
    )


def test_delayed_signal_names_its_time() -> None:
    due = T0 + timedelta(minutes=5)
    event = _delayed(due, now=T0)
    assert event.name == "op@2024-05-01T12:05:00.1234560Z"  # .NET {utc:o}: always seven digits
    assert event.input is not None
    assert json.loads(event.input)["due"] == "2024-05-01T12:05:00.123456Z"
    request = request_from_event(event)
    assert request is not None and request.scheduled_time == due
    # A sender that puts the time only in the name.
    body = json.loads(event.input)
    del body["due"]
    named_only = request_from_event(EventRaisedEvent(name=event.name, input=json.dumps(body)))
    assert named_only is not None and named_only.scheduled_time == due


def test_far_delayed_signal_hops_but_keeps_its_due_time() -> None:
    due = T0 + timedelta(days=10)
    event = _delayed(due, now=T0)
    assert event.name == "op@2024-05-04T12:00:00.1234560Z"  # now + 3 days
    request = request_from_event(event)
    assert request is not None and request.scheduled_time == due


def test_only_op_events_are_requests() -> None:
    for name in ("release", "continue", str(uuid.uuid4()), "Approval", None):
        assert request_from_event(EventRaisedEvent(name=name, input="{}")) is None
    with pytest.raises(MessageFormatError):
        request_from_event(
            EventRaisedEvent(name="op@tomorrow", input='{"op":"x","id":"' + str(uuid.uuid4()) + '"}')
        )
    with pytest.raises(MessageFormatError):
        request_from_event(EventRaisedEvent(name="op", input=None))


def test_response_event_is_named_by_the_request_and_read_by_df() -> None:
    call = _op("get", signal=False)
    ok = response_event(call, OperationOutcome(call, "8", False, None, 1.0))
    assert (ok.name, ok.input) == (call.id, '{"result":"8"}')
    failed = response_event(call, OperationOutcome(call, '"boom"', True, "boom", 1.0))
    assert failed.input == '{"result":"\\"boom\\"","exceptionType":"Error"}'
    nothing = response_event(call, OperationOutcome(call, None, False, None, 1.0))
    for event, expected in ((ok, ("8", False)), (failed, ('"boom"', True)), (nothing, ("null", False))):
        assert event.input is not None
        message = ResponseMessage.from_dict(json.loads(event.input))
        assert (message.result, message.is_exception) == expected
    signal = _op("add", 1)
    with pytest.raises(ValidationError, match="signal"):
        response_event(signal, OperationOutcome(signal, "null", False, None, 1.0))


def test_event_sent_for_call_is_deterministic_and_carries_the_request() -> None:
    action = ScheduledAction(
        event_id=3, kind=ActionKind.CALL_ENTITY, instance_id=COUNTER, operation="add", input="5"
    )
    sent = event_sent_for_call(action, instance_id="orch", execution_id="exec", timestamp=T0)
    again = event_sent_for_call(action, instance_id="orch", execution_id="exec", timestamp=T0)
    assert sent == again
    assert (sent.event_id, sent.instance_id, sent.name) == (3, COUNTER, "op")
    assert sent.input is not None
    body = json.loads(sent.input)
    assert body["id"] == call_request_id("orch", "exec", 3)
    assert {k: body[k] for k in ("op", "input", "parent", "parentExecution")} == {
        "op": "add",
        "input": '"5"',
        "parent": "orch",
        "parentExecution": "exec",
    }
    assert "signal" not in body
    assert call_request_id("orch", "exec2", 3) != body["id"]  # a new execution, new request IDs
    delivered = delivery_event(sent)
    assert (delivered.name, delivered.input) == (sent.name, sent.input)
    signal = ScheduledAction(event_id=4, kind=ActionKind.SIGNAL_ENTITY, instance_id=COUNTER, operation="add")
    signal_body = json.loads(
        event_sent_for_call(signal, instance_id="orch", execution_id="exec", timestamp=T0).input or ""
    )
    assert signal_body["signal"] is True and "input" not in signal_body
    with pytest.raises(ValidationError):
        event_sent_for_call(
            ScheduledAction(event_id=5, kind=ActionKind.ACTIVITY, name="a"),
            instance_id="orch",
            execution_id="exec",
            timestamp=T0,
        )


# --- the orchestrator side, through df -------------------------------------------------------------


def _drive(
    registry: FunctionRegistry, counter: Callable[..., Any], max_episodes: int = 10
) -> tuple[OrchestratorRun, list[HistoryEvent], SchedulerState]:
    """Run use_counter episode by episode: its entity actions go to the counter, answers come back."""
    function = registry.get("use_counter", FunctionKind.ORCHESTRATOR)
    assert function is not None
    instance_id, execution_id = "orch-1", "e" * 32
    events: list[HistoryEvent] = [
        OrchestratorStartedEvent(timestamp=T0),
        ExecutionStartedEvent(
            timestamp=T0,
            name="use_counter",
            version="",
            input=json.dumps("c1"),
            orchestration_instance=OrchestrationInstance(instance_id, execution_id),
        ),
    ]
    state = SchedulerState()
    start = 0
    for episode in range(max_episodes):
        run = run_orchestrator(function.callable, "use_counter", instance_id, events, new_events_start=start)
        if run.done:
            return run, events, state
        now = T0 + timedelta(seconds=episode)
        sent = [
            event_sent_for_call(a, instance_id=instance_id, execution_id=execution_id, timestamp=now)
            for a in new_actions(scheduled_event_ids(events).keys(), run)
        ]
        events += [*sent, OrchestratorCompletedEvent(timestamp=now)]
        requests = [request_from_event(delivery_event(s)) for s in sent]
        batch = run_entity_batch(counter, COUNTER, state, [r for r in requests if r], max_batch=10)
        state = batch.state
        answers = [response_event(o.request, o) for o in batch.outcomes if not o.request.is_signal]
        start = len(events)
        events += [OrchestratorStartedEvent(timestamp=now + timedelta(seconds=1)), *answers]
    raise AssertionError("the orchestration did not finish")


def test_orchestrator_calls_and_signals_the_entity_through_df(
    registry: FunctionRegistry, counter: Callable[..., Any]
) -> None:
    run, events, state = _drive(registry, counter)
    assert run.failure is None
    # get saw the signalled add; the failure reached the orchestrator as a catchable exception.
    assert json.loads(run.output or "") == {"value": 5, "error": "counter/c1 refuses add_then_fail"}
    # The failing operation's set_state stays, as df's entity wrapper does.
    assert (state.entity_exists, state.state) == (True, "105")
    # Replaying the whole history again gives the same result and the same requests.
    function = registry.get("use_counter", FunctionKind.ORCHESTRATOR)
    assert function is not None
    replay = run_orchestrator(
        function.callable, "use_counter", "orch-1", events, new_events_start=len(events)
    )
    assert replay.output == run.output
    assert [a.kind for _, a in sorted(replay.allocations.items())] == [
        ActionKind.SIGNAL_ENTITY,
        ActionKind.CALL_ENTITY,
        ActionKind.CALL_ENTITY,
    ]
