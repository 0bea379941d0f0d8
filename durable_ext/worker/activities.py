"""The work-item dispatcher: runs activities and reports their results to the orchestrations.

Activities are at-least-once: the result is enqueued to the orchestration's control queue before the
work item is deleted, so a crash in between runs the activity again and the orchestration receives
(and ignores) a second result. When this worker owns that control queue, the result goes to the
orchestration dispatcher in memory instead, and the work item is deleted only once the orchestration's
history records the result (:meth:`ResultConsumer.take_result`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Protocol

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from durable_ext import tracing
from durable_ext.app_loader import FunctionKind, FunctionRegistry, RegisteredFunction
from durable_ext.durable_http import HTTP_ACTIVITY_NAME
from durable_ext.failures import activity_failure, missing_activity_failure
from durable_ext.history import FailureDetails, TaskCompletedEvent, TaskFailedEvent, TaskScheduledEvent
from durable_ext.invocations import InvocationKind, invocation
from durable_ext.logs import hub_log
from durable_ext.messages import MessageData, TaskMessage
from durable_ext.monitoring.metrics import WorkerMetrics
from durable_ext.storage.outage import storage_health
from durable_ext.storage.quarantine import POISON_DEQUEUE_COUNT
from durable_ext.storage.queues import Handoff, ReceivedMessage
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.backoff import BackoffPolling
from durable_ext.worker.http_activity import HttpActivity

logger = logging.getLogger(__name__)

MAX_BATCH = 32

PARK_DELAY = timedelta(seconds=10)
"""How long a work item of a disabled activity stays invisible before a worker looks at it again."""


class ActivityError(Exception):
    """An activity could not run (unknown name, undecodable input, unencodable result)."""


def invoke_activity(function: RegisteredFunction, input_json: str | None) -> Any:
    """Call an activity the way the Functions Python worker does; returns the (possibly awaitable) result."""
    try:
        value = ActivityTriggerConverter.decode(
            meta.Datum(type="json", value=input_json if input_json is not None else "null"),
            trigger_metadata=None,
        )
    except ValueError as exc:
        raise ActivityError(f"activity {function.name!r}: cannot decode its input: {exc}") from exc
    return function.callable(**{function.trigger_param: value})


def encode_result(function: RegisteredFunction, value: Any) -> str:
    """JSON text of an activity's return value, as the Functions worker encodes it."""
    try:
        return str(ActivityTriggerConverter.encode(value, expected_type=None).value)
    except ValueError as exc:
        raise ActivityError(
            f"activity {function.name!r} returned a value that is not JSON serializable"
        ) from exc


class ResultConsumer(Protocol):
    """The orchestration dispatcher of this process, as the activity dispatcher sees it."""

    def take_result(self, queue_name: str, work_item: ReceivedMessage, result: MessageData) -> bool:
        """Take ``result`` (for control queue ``queue_name``) in memory, deleting ``work_item`` once
        it is recorded; False to have it sent through the queue instead."""
        ...

    def adopt_work_item(self, work_item: ReceivedMessage) -> bool:
        """Whether ``work_item`` is a redelivered copy of one whose result was taken in memory and is
        not yet recorded; if so, the consumer now holds this copy (its pop receipt) instead."""
        ...


class ActivityDispatcher:
    """Polls ``{hub}-workitems`` and runs activities with bounded concurrency."""

    def __init__(
        self,
        hub: TaskHub,
        registry: FunctionRegistry,
        *,
        max_concurrency: int,
        visibility_timeout: timedelta,
        max_polling_interval: timedelta,
        handoff: Handoff,
        results: ResultConsumer,
        metrics: WorkerMetrics,
    ) -> None:
        self._hub = hub
        self._metrics = metrics
        self._registry = registry
        self._max = max_concurrency
        self._visibility = visibility_timeout
        self._backoff = BackoffPolling(max_polling_interval)
        self._handoff = handoff
        self._results = results
        self._claimed = 0
        """Slots promised to work items being enqueued for this process (see :meth:`claim`)."""
        self._slot_freed = asyncio.Event()
        self._threads = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="activity")
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._hub_name = hub.names.hub
        self._log = hub_log(logger, self._hub_name)
        self._storage = hub.account.describe()
        self._parked_names: set[str] = set()
        """Disabled activities whose work items were parked (each is reported once)."""
        self._http = HttpActivity(self._hub_name)
        """Runs ``context.call_http`` requests (the built-in HTTP activity)."""

    def wake(self) -> None:
        """Poll now: this process just enqueued a work item."""
        self._backoff.wake()

    def claim(self) -> timedelta | None:
        """Keep a slot for a work item this process is enqueuing; None when all slots are taken."""
        if self._stopping or self._loop_task is None or self._free() <= 0:
            return None
        self._claimed += 1
        return self._visibility

    def release(self) -> None:
        """Give back a slot :meth:`claim` kept."""
        self._claimed -= 1
        self._slot_freed.set()

    def deliver(self, message: ReceivedMessage) -> None:
        """Run a work item enqueued under :meth:`claim`."""
        self._claimed -= 1
        self._start(message)

    @property
    def idle(self) -> bool:
        """Whether no activity runs and no work item is on its way to this dispatcher."""
        return not self._tasks and not self._claimed

    def _free(self) -> int:
        return self._max - len(self._tasks) - self._claimed

    def _start(self, message: ReceivedMessage) -> None:
        task = asyncio.create_task(self._run(message))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    def start(self) -> None:
        """Begin polling in the background."""
        self._stopping = False
        self._loop_task = asyncio.create_task(self._poll(), name=f"activities-{self._hub_name}")

    @property
    def polling(self) -> bool:
        """Whether the polling loop runs (started, not stopped, not ended by an error)."""
        return self._loop_task is not None and not self._loop_task.done()

    async def stop_polling(self) -> None:
        """Take no more work items, polled or handed over; running activities go on."""
        self._stopping = True
        self._backoff.wake()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def stop(self) -> None:
        """Stop polling and let running activities finish (their results are still delivered)."""
        await self.stop_polling()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._threads.shutdown(wait=False)
        await self._http.close()

    async def _poll(self) -> None:
        queue = self._hub.work_item_queue
        while not self._stopping:
            free = self._free()
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                messages = await queue.receive(min(MAX_BATCH, free), self._visibility)
            except Exception as exc:
                if not storage_health.failed(self._storage, exc):
                    self._log.exception("polling %s failed", queue.name)
                await self._backoff.wait()
                continue
            if not messages:
                await self._backoff.wait()
                continue
            self._backoff.reset()
            for message in messages:
                self._start(message)

    async def _run(self, message: ReceivedMessage) -> None:
        try:
            if self._results.adopt_work_item(message):
                # Its activity ran and the result waits in memory for its episode: running it again
                # would count a dequeue per late renewal until a false poison verdict.
                self._log.instance(message.data.instance_id).debug(
                    "work item %s came back while its result is held; the holder keeps it",
                    message.message_id,
                )
                return
            disabled = self._disabled_activity(message)
            if disabled is not None:
                await self._park(message, disabled)
                return
            if message.dequeue_count > POISON_DEQUEUE_COUNT:
                await self._quarantine(message)
                return
            renewal = asyncio.create_task(self._keep_invisible(message))
            try:
                response = await self._execute(message)
            finally:
                # Stopped before the result moves on: the work item's pop receipt is final from here.
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewal
            if response is None or await self._report(message, response):
                await self._hub.work_item_queue.delete(message)
        except Exception as exc:
            # The work item stays in the queue and is retried after its visibility timeout.
            if storage_health.failed(self._storage, exc):
                return
            self._log.instance(message.data.instance_id).exception(
                "activity work item %s failed to complete", message.message_id
            )

    def _disabled_activity(self, message: ReceivedMessage) -> str | None:
        """The name of the work item's activity when this app has it disabled, else None."""
        event = message.data.event
        if not isinstance(event, TaskScheduledEvent):
            return None
        function = self._registry.get(event.name or "", FunctionKind.ACTIVITY)
        return function.function_name if function is not None and function.disabled else None

    async def _park(self, message: ReceivedMessage, function_name: str) -> None:
        """Leave a disabled activity's work item in the queue, as the Durable Functions extension does
        (its orchestration waits), without counting towards poison: a fresh copy replaces it."""
        if function_name not in self._parked_names:
            self._parked_names.add(function_name)
            self._log.warning(
                "activity %s is disabled (app setting AzureWebJobs.%s.Disabled): its work items wait in"
                " %s, and their orchestrations with them, until a worker that has it enabled takes them",
                function_name,
                function_name,
                self._hub.work_item_queue.name,
            )
        queue = self._hub.work_item_queue
        await queue.send(message.data, delay=PARK_DELAY)
        await queue.delete(message)
        self._log.instance(message.data.instance_id).debug(
            "work item %s of disabled activity %s parked for %s",
            message.message_id,
            function_name,
            PARK_DELAY,
        )

    async def _quarantine(self, message: ReceivedMessage) -> None:
        """Take a work item that never completes (it took its worker down each time) out of the queue.

        The orchestration gets the activity's failure, which it can catch, instead of waiting for ever.
        """
        data = message.data
        event = data.event
        name = getattr(event, "name", None) or "?"
        reason = (
            f"Activity function '{name}' never completed: its work item was dequeued "
            f"{message.dequeue_count} times and is quarantined in table {self._hub.quarantine.table_name} "
            "(see `python -m durable_ext doctor`)"
        )
        await self._hub.quarantine.add(message, reason)
        self._log.instance(data.instance_id).error("%s", reason)
        instance = data.task_message.orchestration_instance if data.task_message else None
        if isinstance(event, TaskScheduledEvent) and instance is not None:
            failed = TaskFailedEvent(
                task_scheduled_id=event.event_id,
                reason=reason,
                failure_details=FailureDetails(error_type="PoisonMessage", error_message=reason),
            )
            response = MessageData(TaskMessage(failed, instance), episode=data.episode, sender=instance)
            if not await self._report(message, response):
                return
        await self._hub.work_item_queue.delete(message)

    async def _keep_invisible(self, message: ReceivedMessage) -> None:
        """Push the work item's visibility out while a long activity runs, so no one else takes it."""
        while True:
            await asyncio.sleep(self._visibility.total_seconds() / 2)
            await self._hub.work_item_queue.renew(message, self._visibility)

    async def _execute(self, message: ReceivedMessage) -> MessageData | None:
        """Run the work item's activity; returns the result message, or None for a stray work item."""
        data = message.data
        event = data.event
        instance = data.task_message.orchestration_instance if data.task_message else None
        if not isinstance(event, TaskScheduledEvent) or instance is None:
            self._log.instance(data.instance_id).warning(
                "work item %s is not an activity request (%s); deleted",
                message.message_id,
                type(event).__name__,
            )
            return None
        name = event.name or ""
        started = time.perf_counter()
        with tracing.activity_execution(event, instance.instance_id) as span:
            if name == HTTP_ACTIVITY_NAME:
                result_event = await self._http.run(event, instance.instance_id)
            else:
                function = self._registry.get(name, FunctionKind.ACTIVITY)
                result_event = await self._outcome(function, name, event, instance.instance_id)
            if isinstance(result_event, TaskFailedEvent):
                span.fail(result_event.reason or "activity failed")
        self._metrics.activity(isinstance(result_event, TaskFailedEvent), time.perf_counter() - started)
        return MessageData(TaskMessage(result_event, instance), episode=data.episode, sender=instance)

    async def _report(self, message: ReceivedMessage, response: MessageData) -> bool:
        """Deliver the result; True when the work item may be deleted now, False when the
        orchestration took the result in memory and deletes the work item itself."""
        queue = self._hub.control_queue_for(response.instance_id)
        if self._results.take_result(queue.name, message, response):
            return False
        await queue.send(response, handoff=self._handoff)
        return True

    async def _outcome(
        self, function: RegisteredFunction | None, name: str, event: TaskScheduledEvent, instance_id: str
    ) -> TaskCompletedEvent | TaskFailedEvent:
        if function is None:
            reason, details = missing_activity_failure(name)
            self._log.instance(instance_id).warning("%s", reason)
            return TaskFailedEvent(task_scheduled_id=event.event_id, reason=reason, details=details)
        started = asyncio.get_running_loop().time()
        with invocation(function.function_name, InvocationKind.ACTIVITY) as call:
            try:
                if function.is_async:
                    value = await invoke_activity(function, event.input)
                else:
                    # The thread runs in a copy of this context, so the app's log lines name the invocation.
                    value = await asyncio.get_running_loop().run_in_executor(
                        self._threads, contextvars.copy_context().run, _call_sync, function, event.input
                    )
                result = encode_result(function, value)
            except Exception as exc:
                call.fail(exc)
                elapsed = (asyncio.get_running_loop().time() - started) * 1000
                self._log.instance(instance_id).info(
                    "activity %s (task %d) failed after %.0f ms: %s", name, event.event_id, elapsed, exc
                )
                reason, details = activity_failure(name, exc)
                return TaskFailedEvent(task_scheduled_id=event.event_id, reason=reason, details=details)
        self._log.instance(instance_id).debug(
            "activity %s (task %d) completed in %.0f ms",
            name,
            event.event_id,
            (asyncio.get_running_loop().time() - started) * 1000,
        )
        return TaskCompletedEvent(task_scheduled_id=event.event_id, result=result)


def _call_sync(function: RegisteredFunction, input_json: str | None) -> Any:
    value = invoke_activity(function, input_json)
    if inspect.isawaitable(value):
        raise ActivityError(f"activity {function.name!r} returned an awaitable from a synchronous function")
    return value
