"""The management HTTP API end to end: real Azurite, a running engine, uvicorn, and the real df client.

Every test serves ``management_routes`` on a free port and drives it with
``azure.durable_functions.DurableOrchestrationClient`` built from ``client_binding_json`` (what an HTTP
starter gets) and with raw httpx requests for the status codes and bad inputs the df client never sends.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import azure.durable_functions as df
import azure.functions as func
import httpx
import pytest
import uvicorn
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus
from azure.durable_functions.models.utils import http_utils
from starlette.applications import Starlette

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import DEFAULT_MAX_PAYLOAD_BYTES, TaskHubClient
from durable_ext.config import InstanceRetentionOptions
from durable_ext.history import EventRaisedEvent, OrchestrationStatus
from durable_ext.host.api import CONTINUATION_HEADER, management_mounts, new_rpc_path
from durable_ext.host.df_json import MANAGEMENT_PREFIX, client_binding_json
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceQuery, escape_partition_key
from durable_ext.worker.engine import Engine
from durable_ext.worker.retention import InstancePurger

TIMEOUT = 30.0
MANAGEMENT_KEYS = {
    "id",
    "statusQueryGetUri",
    "sendEventPostUri",
    "terminatePostUri",
    "rewindPostUri",
    "purgeHistoryDeleteUri",
    "restartPostUri",
    "suspendPostUri",
    "resumePostUri",
}


# ---- fixtures ---------------------------------------------------------------------------------


@dataclass
class Api:
    """A served management API and the clients that talk to it."""

    base_url: str
    hub: TaskHub
    client: TaskHubClient
    http: httpx.AsyncClient
    df: df.DurableOrchestrationClient

    def url(self, path: str) -> str:
        return f"{self.base_url}{MANAGEMENT_PREFIX}/{path}"

    async def wait_for(self, instance_id: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Poll the status route until ``check`` accepts the status JSON."""
        deadline = time.monotonic() + TIMEOUT
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = await self.http.get(self.url(f"instances/{quote(instance_id)}"))
            if response.status_code != 404:
                body = response.json()
                if check(body):
                    return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"{instance_id} never reached the expected state; last status {body}")

    async def wait_for_status(self, instance_id: str, status: str) -> dict[str, Any]:
        return await self.wait_for(instance_id, lambda body: body["runtimeStatus"] == status)

    async def wait_for_custom_status(self, instance_id: str, custom: str) -> dict[str, Any]:
        return await self.wait_for(instance_id, lambda body: body["customStatus"] == custom)


@asynccontextmanager
async def _serve(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields the origin once it answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient() as probe:
            deadline = time.monotonic() + 10
            while True:
                assert not task.done(), "uvicorn exited during startup"
                try:
                    await probe.get(base_url + "/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "uvicorn did not answer within 10 s"
                    await asyncio.sleep(0.01)
        yield base_url
    finally:
        server.should_exit = True
        await task
        sock.close()


async def serve_management(
    stack: AsyncExitStack, client: TaskHubClient, registry: FunctionRegistry, *, system_key: str | None = None
) -> tuple[str, str]:
    """Serve the management API as ``start`` does (the df client's mount, then the public one) until
    ``stack`` closes: (base URL, client binding JSON pointing the df client at its mount)."""
    rpc_path = new_rpc_path()
    mounts = management_mounts(client, rpc_path, system_key=system_key, functions=registry)
    base_url = await stack.enter_async_context(_serve(Starlette(routes=mounts)))
    binding = client_binding_json(
        base_url, client.hub.names.hub, system_key=system_key, rpc_base_url=f"{base_url}{rpc_path}/"
    )
    return base_url, binding


ServeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def serve_api(hub: TaskHub, engine: Engine, registry: FunctionRegistry) -> AsyncIterator[ServeApi]:
    """Start (any number of) management API servers on the test's hub; all stop at teardown."""
    stack = AsyncExitStack()

    async def start(
        *, system_key: str | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    ) -> Api:
        client = TaskHubClient(hub, max_payload_bytes=max_payload_bytes)
        base_url, binding = await serve_management(stack, client, registry, system_key=system_key)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT))
        return Api(base_url, hub, client, http, df.DurableOrchestrationClient(binding))

    async with stack:
        yield start
    # df keeps one aiohttp session per process, bound to this test's event loop.
    await http_utils._close_session()


@pytest.fixture
async def api(serve_api: ServeApi) -> Api:
    return await serve_api()


async def _rows(hub: TaskHub) -> tuple[int, int]:
    """(Instances rows, History rows) of the hub."""
    instances = [e async for e in hub.tracking._instances.list_entities()]
    history = [e async for e in hub.tracking._history.list_entities()]
    return len(instances), len(history)


async def _queued_messages(hub: TaskHub) -> int:
    info = await hub.info()
    return sum(r.message_count or 0 for r in info.resources if r.kind == "queue")


def _starter_request(api: Api) -> func.HttpRequest:
    return func.HttpRequest(method="POST", url=f"{api.base_url}/api/orchestrators/start", body=b"")


# ---- client binding ---------------------------------------------------------------------------


def test_client_binding_json_points_every_url_at_the_management_routes() -> None:
    binding = json.loads(client_binding_json("http://localhost:7071", "MyHub"))
    base = "http://localhost:7071/runtime/webhooks/durabletask"
    assert binding["taskHubName"] == "MyHub"
    assert binding["rpcBaseUrl"] == base + "/"
    assert binding["baseUrl"] == binding["httpBaseUrl"] == base
    assert binding["requiredQueryStringParameters"] == ""
    assert (
        binding["creationUrls"]["createNewInstancePostUri"]
        == base + "/orchestrators/{functionName}[/{instanceId}]"
    )
    urls = binding["managementUrls"]
    assert set(urls) == MANAGEMENT_KEYS and urls["id"] == "INSTANCEID"
    assert urls["statusQueryGetUri"] == base + "/instances/INSTANCEID?taskHub=MyHub&connection=Storage"
    assert urls["terminatePostUri"].startswith(base + "/instances/INSTANCEID/terminate?reason={text}&")
    assert isinstance(binding["maxGrpcMessageSizeInBytes"], int) and binding["grpcHttpClientTimeout"]

    keyed = json.loads(client_binding_json("http://h:1", "MyHub", "Conn", system_key="k/y"))
    assert keyed["requiredQueryStringParameters"] == "code=k%2Fy"
    assert all("code=k%2Fy" in url for key, url in keyed["managementUrls"].items() if key != "id")
    assert "connection=Conn" in keyed["managementUrls"]["statusQueryGetUri"]
    payload = df.DurableOrchestrationClient(json.dumps(keyed)).create_http_management_payload("abc")
    assert payload["id"] == "abc"
    assert payload["sendEventPostUri"].startswith(
        "http://h:1/runtime/webhooks/durabletask/instances/abc/raiseEvent/"
    )


def test_prefix_queries_are_a_partition_key_range_on_the_sanitized_prefix() -> None:
    text = InstanceQuery(
        instance_id_prefix="a?b'c", statuses=frozenset({OrchestrationStatus.Failed})
    ).to_filter()
    assert "(PartitionKey ge 'a^3b''c' and PartitionKey lt 'a^3b''d')" in text
    assert "(RuntimeStatus eq 'Failed')" in text
    assert "(PartitionKey lt '@' or PartitionKey ge 'A')" in text
    assert escape_partition_key("a?b'c") == "a^3b'c"


# ---- the df client ----------------------------------------------------------------------------


async def test_df_start_new_and_get_status_with_history(api: Api) -> None:
    assert await api.df.start_new("chain", "chain-1", 1) == "chain-1"
    await api.client.wait_for_completion("chain-1", TIMEOUT)

    status = await api.df.get_status("chain-1", show_history=True, show_history_output=True)
    assert status.runtime_status is OrchestrationRuntimeStatus.Completed
    assert (status.name, status.instance_id, status.input_, status.output) == ("chain", "chain-1", 1, 32)
    assert status.created_time is not None and status.last_updated_time >= status.created_time
    events = status.historyEvents
    assert [e["EventType"] for e in events] == [
        "ExecutionStarted",
        *["TaskCompleted"] * 5,
        "ExecutionCompleted",
    ]
    assert events[0]["FunctionName"] == "chain" and "Input" not in events[0]
    completed = events[1:6]
    assert [e["Result"] for e in completed] == [2, 4, 8, 16, 32]
    assert all(e["FunctionName"] == "double" and e["ScheduledTime"] <= e["Timestamp"] for e in completed)
    assert all("EventId" not in e and "TaskScheduledId" not in e for e in events)
    assert events[-1]["OrchestrationStatus"] == "Completed" and events[-1]["Result"] == 32

    without_output = await api.df.get_status("chain-1", show_history=True)
    assert all("Result" not in e for e in without_output.historyEvents)
    plain = await api.df.get_status("chain-1")
    assert not hasattr(plain, "historyEvents")

    generated = await api.df.start_new("chain", None, 2)
    assert len(generated) == 32
    assert json.loads((await api.client.wait_for_completion(generated, TIMEOUT)).output or "") == 64


async def test_df_raise_event_delivers_the_value_itself(api: Api) -> None:
    instance = await api.df.start_new("approval", "approve-1", 30)
    await api.wait_for_custom_status(instance, "waiting")
    await api.df.raise_event(instance, "Approval", "alice")
    state = await api.client.wait_for_completion(instance, TIMEOUT)
    # The df client double-encodes event data; DF would hand the orchestrator '"alice"' (df issue #295).
    assert json.loads(state.output or "") == "approved: alice"


async def test_event_bodies_are_stored_as_sent_and_only_the_df_clients_are_unwrapped(api: Api) -> None:
    """The human_interaction sample's reply: curl sends the JSON string "1180", the code is a string."""
    sent = {"curl-string": '"1180"', "curl-number": "1180", "df-string": '"1180"', "df-number": "1180"}
    for instance in sent:
        await api.df.start_new("approval", instance, 30)
        await api.wait_for_custom_status(instance, "waiting")
    for instance, body in sent.items():
        if instance.startswith("curl"):
            url = api.url(f"instances/{instance}/raiseEvent/Approval")
            raised = await api.http.post(url, content=body, headers={"content-type": "application/json"})
            assert raised.status_code == 202
        else:
            await api.df.raise_event(instance, "Approval", json.loads(body))
    for instance, body in sent.items():
        await api.client.wait_for_completion(instance, TIMEOUT)
        events = (await api.client.hub.tracking.load_history(instance)).events
        raised_inputs = [e.input for e in events if isinstance(e, EventRaisedEvent)]
        assert raised_inputs == [body], instance


async def test_df_suspend_resume_terminate_and_gone(api: Api) -> None:
    instance = await api.df.start_new("approval", "life-1", 30)
    await api.wait_for_custom_status(instance, "waiting")
    await api.df.suspend(instance, "pause")
    assert (await api.wait_for_status(instance, "Suspended"))["output"] == "pause"
    # DF answers 500 with its InvalidOperationException text; its client reports an unexpected status.
    suspended_again = await api.http.post(api.url(f"instances/{instance}/suspend"))
    assert (suspended_again.status_code, suspended_again.json()["ExceptionMessage"]) == (
        500,
        f"Cannot suspend the orchestration instance {instance} because instance is in the Suspended state.",
    )
    with pytest.raises(Exception, match="unexpected status code 500"):
        await api.df.suspend(instance, "again")
    await api.df.resume(instance, "go on")
    await api.wait_for_status(instance, "Running")
    resumed_again = await api.http.post(api.url(f"instances/{instance}/resume"))
    assert (resumed_again.status_code, resumed_again.json()["error"]) == (
        500,
        f"Cannot resume the orchestration instance {instance} because instance is in the Running state.",
    )
    await api.df.terminate(instance, "stop it")
    body = await api.wait_for_status(instance, "Terminated")
    assert body["output"] == "stop it"

    # DF answers 410 for an instance that has ended; the df client accepts it for these three.
    await api.df.terminate(instance, "again")
    await api.df.suspend(instance, "again")
    await api.df.resume(instance, "again")
    for operation in ("terminate", "suspend", "resume", "raiseEvent/Approval"):
        response = await api.http.post(api.url(f"instances/{instance}/{operation}"), json="x")
        assert response.status_code == 410, operation
    with pytest.raises(Exception, match="is gone"):
        await api.df.raise_event(instance, "Approval", "late")


async def test_df_status_queries(api: Api) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    for instance in ("a-1", "a-2"):
        await api.df.start_new("chain", instance, 1)
    await api.df.start_new("approval", "b-1", 30)
    for instance in ("a-1", "a-2"):
        await api.client.wait_for_completion(instance, TIMEOUT)

    assert {s.instance_id for s in await api.df.get_status_all()} == {"a-1", "a-2", "b-1"}
    completed = await api.df.get_status_by(runtime_status=[OrchestrationRuntimeStatus.Completed])
    assert {s.instance_id for s in completed} == {"a-1", "a-2"}
    by_prefix = await api.df.get_status_by(instance_id_prefix="a-")
    assert {s.instance_id for s in by_prefix} == {"a-1", "a-2"}
    assert all(s.input_ == 1 and s.output == 32 for s in by_prefix)
    in_range = await api.df.get_status_by(created_time_from=before, created_time_to=datetime.now(UTC))
    assert len(in_range) == 3
    assert await api.df.get_status_by(created_time_from=datetime.now(UTC) + timedelta(hours=1)) == []


async def test_df_purge_one_and_by_filter(api: Api) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    for instance in ("p-1", "p-2", "p-3"):
        await api.df.start_new("chain", instance, 1)
    await api.df.start_new("approval", "p-running", 30)
    for instance in ("p-1", "p-2", "p-3"):
        await api.client.wait_for_completion(instance, TIMEOUT)

    assert (await api.df.purge_instance_history("p-1")).instances_deleted == 1
    assert await api.hub.tracking.get_instance("p-1") is None
    assert (await api.hub.tracking.load_history("p-1")).events == []
    assert (await api.df.purge_instance_history("p-1")).instances_deleted == 0

    result = await api.df.purge_instance_history_by(
        created_time_from=start, runtime_status=[OrchestrationRuntimeStatus.Completed]
    )
    assert result.instances_deleted == 2
    remaining = [s.instance_id for s in await api.df.get_status_all()]
    assert remaining == ["p-running"], "purge by filter never touches a running instance"
    # Python's strftime writes datetime.min's year as "1"; the API pads it as DF does.
    assert (await api.df.purge_instance_history_by(created_time_from=datetime.min)).instances_deleted == 0


async def test_df_check_status_responses_work_with_httpx(api: Api) -> None:
    request = _starter_request(api)
    finished = await api.df.start_new("chain", "wait-1", 1)
    response = await api.df.wait_for_completion_or_create_check_status_response(
        request, finished, timeout_in_milliseconds=20_000, retry_interval_in_milliseconds=50
    )
    assert response.status_code == 200 and json.loads(response.get_body()) == 32

    waiting = await api.df.start_new("approval", "wait-2", 30)
    response = await api.df.wait_for_completion_or_create_check_status_response(
        request, waiting, timeout_in_milliseconds=300, retry_interval_in_milliseconds=100
    )
    assert response.status_code == 202
    links = json.loads(response.get_body())
    assert set(links) >= MANAGEMENT_KEYS - {"rewindPostUri"} and links["id"] == waiting
    assert response.headers["Location"] == links["statusQueryGetUri"]
    assert all(url.startswith(api.base_url) for key, url in links.items() if key != "id")

    status = await api.http.get(links["statusQueryGetUri"])
    assert status.status_code == 202 and status.json()["runtimeStatus"] in ("Pending", "Running")
    await api.wait_for_custom_status(waiting, "waiting")
    raised = await api.http.post(links["sendEventPostUri"].replace("{eventName}", "Approval"), json="bob")
    assert raised.status_code == 202
    assert (await api.wait_for_status(waiting, "Completed"))["output"] == "approved: bob"

    check = api.df.create_check_status_response(request, "wait-3")
    assert (check.status_code, check.headers["Retry-After"]) == (202, "10")
    await api.df.start_new("approval", "wait-3", 30)
    payload = api.df.create_http_management_payload("wait-3")
    assert json.loads(check.get_body()) == payload
    await api.wait_for_custom_status("wait-3", "waiting")
    suspended = await api.http.post(payload["suspendPostUri"].replace("{text}", "nap"))
    assert suspended.status_code == 202
    await api.wait_for_status("wait-3", "Suspended")
    assert (await api.http.post(payload["resumePostUri"].replace("{text}", "up"))).status_code == 202
    await api.wait_for_status("wait-3", "Running")
    assert (await api.http.post(payload["terminatePostUri"].replace("{text}", "bye"))).status_code == 202
    assert (await api.wait_for_status("wait-3", "Terminated"))["output"] == "bye"
    purged = await api.http.delete(payload["purgeHistoryDeleteUri"])
    assert (purged.status_code, purged.json()) == (200, {"instancesDeleted": 1})


# ---- raw HTTP: start --------------------------------------------------------------------------


async def test_start_answers_202_with_check_status_payload(api: Api) -> None:
    response = await api.http.post(api.url("orchestrators/chain/raw-1"), content=b"3")
    assert response.status_code == 202
    body = response.json()
    assert set(body) == MANAGEMENT_KEYS and body["id"] == "raw-1"
    assert response.headers["Location"] == body["statusQueryGetUri"]
    assert response.headers["Retry-After"] == "10"
    prefix = f"{api.base_url}{MANAGEMENT_PREFIX}/instances/raw-1"
    assert body["statusQueryGetUri"] == f"{prefix}?taskHub={api.hub.names.hub}&connection=Storage"
    assert body["rewindPostUri"].startswith(f"{prefix}/rewind?reason={{text}}&")
    assert (await api.wait_for_status("raw-1", "Completed"))["output"] == 96

    generated = await api.http.post(api.url("orchestrators/chain"), json={"ignored": True})
    assert generated.status_code == 202 and len(generated.json()["id"]) == 32

    waited = await api.http.post(
        api.url("orchestrators/chain/raw-2?timeout=20&pollingInterval=0.05"), content=b"2"
    )
    assert (waited.status_code, waited.json()) == (200, 64)
    failed = await api.http.post(api.url("orchestrators/raises/raw-3?timeout=20&pollingInterval=0.05"))
    assert failed.status_code == 200 and failed.json()["runtimeStatus"] == "Failed"


async def test_start_with_bad_input_writes_nothing(api: Api) -> None:
    cases = {
        "orchestrators/chain/bad-json": (b"{not json", 400, "not valid JSON"),
        # DF's ArgumentException text, with the orchestrators the app has.
        "orchestrators/no_such_orchestrator/bad-name": (
            b"1",
            400,
            "The function 'no_such_orchestrator' doesn't exist, is disabled, or is not an orchestrator "
            "function. Additional info: The following are the known orchestrator functions: '",
        ),
        "orchestrators/chain/%40entity-like": (b"1", 400, "reserved for entity IDs"),
        "orchestrators/chain/ctl%01char": (b"1", 400, "control character"),
        f"orchestrators/chain/{'x' * 300}": (b"1", 400, "at most 256"),
        "orchestrators/chain/bad-wait?timeout=1&pollingInterval=5": (b"1", 400, "pollingInterval"),
        "orchestrators/chain/bad-wait?timeout=soon&pollingInterval=1": (b"1", 400, "timeout"),
    }
    for path, (body, status, message) in cases.items():
        response = await api.http.post(api.url(path), content=body)
        assert response.status_code == status, path
        assert message in response.json()["error"], path
    with pytest.raises(Exception, match="no_such_orchestrator"):
        await api.df.start_new("no_such_orchestrator", "df-bad-name")
    assert await _rows(api.hub) == (0, 0)
    assert await _queued_messages(api.hub) == 0


async def test_oversized_payloads_are_413_and_write_nothing(serve_api: ServeApi) -> None:
    api = await serve_api(max_payload_bytes=1024)
    just_over = json.dumps("x" * 1100)
    response = await api.http.post(api.url("orchestrators/chain/big-1"), content=just_over)
    assert response.status_code == 413 and "1024" in response.json()["error"]
    huge = await api.http.post(api.url("orchestrators/chain/big-2"), content=json.dumps("y" * 5000))
    assert huge.status_code == 413
    assert await _rows(api.hub) == (0, 0)

    await api.df.start_new("approval", "big-event", 30)
    await api.wait_for_custom_status("big-event", "waiting")
    event = await api.http.post(api.url("instances/big-event/raiseEvent/Approval"), json="z" * 1100)
    assert event.status_code == 413
    reason = await api.http.post(api.url("instances/big-event/terminate"), params={"reason": "r" * 1100})
    assert reason.status_code == 413
    assert (await api.http.get(api.url("instances/big-event"))).json()["runtimeStatus"] == "Running"


async def test_duplicate_start_is_409(api: Api) -> None:
    await api.df.start_new("approval", "dup-1", 30)
    response = await api.http.post(api.url("orchestrators/approval/dup-1"), content=b"30")
    assert response.status_code == 409 and "already exists" in response.json()["error"]
    with pytest.raises(Exception, match="already exists"):
        await api.df.start_new("approval", "dup-1", 30)


# ---- raw HTTP: status and queries -------------------------------------------------------------


async def test_status_codes(api: Api) -> None:
    unknown = await api.http.get(api.url("instances/nobody"))
    assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]
    assert (await api.http.get(api.url("instances/%40counter%40k"))).status_code == 404

    await api.df.start_new("approval", "st-running", 30)
    running_url = api.url("instances/st-running?showHistory=true")
    running = await api.http.get(running_url)
    assert running.status_code == 202
    assert running.headers["Location"] == running_url and running.headers["Retry-After"] == "5"

    await api.df.start_new("raises", "st-failed")
    await api.client.wait_for_completion("st-failed", TIMEOUT)
    failed = await api.http.get(api.url("instances/st-failed"))
    assert failed.status_code == 200 and "orchestrator gave up" in failed.json()["output"]
    assert "Location" not in failed.headers
    as_500 = await api.http.get(api.url("instances/st-failed?returnInternalServerErrorOnFailure=true"))
    assert as_500.status_code == 500 and as_500.json()["runtimeStatus"] == "Failed"

    body = (await api.http.get(api.url("instances/st-running?showInput=false"))).json()
    assert set(body) == {
        "name",
        "instanceId",
        "runtimeStatus",
        "input",
        "customStatus",
        "output",
        "createdTime",
        "lastUpdatedTime",
    }
    assert body["input"] is None and body["createdTime"].endswith("Z") and "." not in body["createdTime"]
    assert (await api.http.get(api.url("instances/st-running"))).json()["input"] == 30
    assert (await api.http.get(api.url("instances/st-running?showHistory=maybe"))).status_code == 400


async def test_list_pages_with_continuation_tokens(api: Api) -> None:
    for index in range(7):
        await api.client.start_new("approval", f"page-{index}", "30")
    await api.client.start_new("approval", "other-1", "30")

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        headers = {CONTINUATION_HEADER: token} if token else {}
        response = await api.http.get(api.url("instances?instanceIdPrefix=page-&top=3"), headers=headers)
        assert response.status_code == 200
        page = response.json()
        assert len(page) <= 3
        seen += [item["instanceId"] for item in page]
        pages += 1
        token = response.headers.get(CONTINUATION_HEADER)
        if token is None:
            break
    assert sorted(seen) == [f"page-{i}" for i in range(7)] and pages >= 3

    no_input = (await api.http.get(api.url("instances?instanceIdPrefix=page-&showInput=false"))).json()
    assert len(no_input) == 7 and all(item["input"] is None for item in no_input)
    with_input = (await api.http.get(api.url("instances?instanceIdPrefix=page-"))).json()
    assert all(item["input"] == 30 for item in with_input)
    statuses = (await api.http.get(api.url("instances?runtimeStatus=Pending,Running"))).json()
    assert len(statuses) == 8

    bad = {
        "instances?runtimeStatus=Sleeping": "Sleeping",
        "instances?createdTimeFrom=yesterday": "createdTimeFrom",
        "instances?top=0": "top",
        "instances?top=many": "top",
    }
    for path, message in bad.items():
        response = await api.http.get(api.url(path))
        assert response.status_code == 400 and message in response.json()["error"], path
    forged = await api.http.get(api.url("instances"), headers={CONTINUATION_HEADER: "not-a-token"})
    assert forged.status_code == 400 and "continuation token" in forged.json()["error"]


# ---- raw HTTP: operations ---------------------------------------------------------------------


async def test_operation_errors(api: Api) -> None:
    for operation in ("terminate", "suspend", "resume", "raiseEvent/Approval", "restart"):
        response = await api.http.post(api.url(f"instances/ghost/{operation}"), json=1)
        assert response.status_code == 404, operation
    await api.df.start_new("approval", "op-1", 30)
    await api.wait_for_custom_status("op-1", "waiting")
    as_text = await api.http.post(
        api.url("instances/op-1/raiseEvent/Approval"), content=b"hi", headers={"content-type": "text/plain"}
    )
    assert as_text.status_code == 400 and "application/json" in as_text.json()["error"]
    malformed = await api.http.post(
        api.url("instances/op-1/raiseEvent/Approval"),
        content=b"{oops",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert (await api.http.post(api.url("instances/op-1/explode"))).status_code == 404
    assert (await api.http.get(api.url("instances/op-1"))).json()["runtimeStatus"] == "Running"

    upper = await api.http.post(api.url("instances/op-1/TERMINATE?reason=case"))
    assert upper.status_code == 202, "operation names are case-insensitive, as in DF"
    assert (await api.wait_for_status("op-1", "Terminated"))["output"] == "case"


async def test_purge_errors(api: Api) -> None:
    assert (await api.http.delete(api.url("instances/ghost"))).status_code == 404
    await api.df.start_new("approval", "purge-running", 30)
    running = await api.http.delete(api.url("instances/purge-running"))
    assert running.status_code == 412 and "ended" in running.json()["error"]
    assert await api.hub.tracking.get_instance("purge-running") is not None

    no_from = await api.http.delete(api.url("instances"))
    assert no_from.status_code == 400 and "createdTimeFrom" in no_from.json()["error"]
    running_filter = await api.http.delete(
        api.url("instances?createdTimeFrom=2020-01-01T00:00:00Z&runtimeStatus=Running")
    )
    assert running_filter.status_code == 400
    nothing = await api.http.delete(api.url("instances/?createdTimeFrom=2020-01-01T00:00:00Z"))
    assert nothing.status_code == 404
    assert await api.hub.tracking.get_instance("purge-running") is not None


async def test_purge_deletes_history_rows_and_large_blobs(api: Api) -> None:
    big = json.dumps("b" * 70_000)
    for instance in ("big-1", "big-10"):
        await api.client.start_new("timer", instance, big)
    for instance in ("big-1", "big-10"):
        await api.client.wait_for_completion(instance, TIMEOUT)

    async def blobs(prefix: str) -> list[str]:
        container = api.hub.large_messages._container
        return [b.name async for b in container.list_blobs(name_starts_with=prefix)]

    assert await blobs("big-1/"), "the large input went through blobs"
    shown = (await api.http.get(api.url("instances/big-1"))).json()
    assert shown["input"] == "b" * 70_000

    response = await api.http.delete(api.url("instances/big-1"))
    assert (response.status_code, response.json()) == (200, {"instancesDeleted": 1})
    assert await blobs("big-1/") == []
    assert await blobs("big-10/"), "an instance whose ID extends the purged one keeps its blobs"
    history = [e async for e in api.hub.tracking._history.query_entities("PartitionKey eq 'big-1'")]
    assert history == []
    assert await api.hub.tracking.get_instance("big-1") is None
    assert (await api.client.get_status("big-10")) is not None


async def test_restart(api: Api) -> None:
    await api.df.start_new("chain", "r-1", 1)
    await api.client.wait_for_completion("r-1", TIMEOUT)

    fresh = await api.http.post(api.url("instances/r-1/restart"))
    assert fresh.status_code == 202
    new_id = fresh.json()["id"]
    assert new_id != "r-1" and fresh.headers["Location"] == fresh.json()["statusQueryGetUri"]
    assert (await api.wait_for_status(new_id, "Completed"))["output"] == 32

    same = await api.http.post(api.url("instances/r-1/restart?restartWithNewInstanceId=false"))
    assert same.status_code == 202 and same.json()["id"] == "r-1"
    deadline = time.monotonic() + TIMEOUT
    while True:
        state = await api.client.get_status("r-1")
        assert state is not None
        if state.generation == 1 and state.runtime_status is OrchestrationStatus.Completed:
            break
        assert time.monotonic() < deadline, f"r-1 was not restarted: {state}"
        await asyncio.sleep(0.05)
    assert json.loads(state.output or "") == 32

    await api.df.start_new("approval", "r-running", 30)
    conflict = await api.http.post(api.url("instances/r-running/restart?restartWithNewInstanceId=false"))
    assert conflict.status_code == 409


async def test_rewind_through_the_df_client_and_over_http(api: Api, registry: FunctionRegistry) -> None:
    function = registry.get("rewindable")
    assert function is not None
    gates: set[str] = function.callable.orchestrator_function.__globals__["OPEN_GATES"]
    for instance in ("rw-df", "rw-http"):
        await api.df.start_new("rewindable", instance, instance)
        await api.wait_for_status(instance, "Failed")
        gates.add(f"{instance}-gate")

    await api.df.rewind("rw-df", "fixed")
    answer = await api.http.post(api.url("instances/rw-http/rewind?reason=fixed"))
    assert answer.status_code == 202
    for instance in ("rw-df", "rw-http"):
        done = await api.wait_for_status(instance, "Completed")
        assert done["output"][2] == f"{instance}-gate passed"

    assert (await api.http.post(api.url("instances/rw-http/rewind"))).status_code == 410
    assert (await api.http.post(api.url("instances/nobody/rewind"))).status_code == 404
    assert (await api.http.post(api.url("instances/bad%00id/rewind"))).status_code == 400
    with pytest.raises(Exception, match="only supported on failed"):
        await api.df.rewind("rw-df", "again")


async def test_auto_purge_is_seen_by_the_df_client_and_over_http(api: Api) -> None:
    await api.df.start_new("chain", "auto-done", 1)
    await api.df.start_new("approval", "auto-running", 30)
    await api.wait_for_status("auto-done", "Completed")
    retention = InstanceRetentionOptions(completed=timedelta(0), purge_interval=timedelta(milliseconds=100))
    purger = InstancePurger(api.client, retention, is_leader=lambda: True)
    purger.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while (await api.http.get(api.url("instances/auto-done"))).status_code != 404:
            assert time.monotonic() < deadline, "auto-done was never purged"
            await asyncio.sleep(0.05)
    finally:
        await purger.stop()
    assert (await api.df.get_status("auto-done")).runtime_status is None
    listed = await api.http.get(api.url("instances"))
    assert [body["instanceId"] for body in listed.json()] == ["auto-running"]


async def test_signalling_an_unknown_entity_or_an_absurd_idle_time_is_400_and_writes_nothing(
    api: Api,
) -> None:
    before = await _rows(api.hub), await _queued_messages(api.hub)
    unknown = await api.http.post(api.url("entities/NoSuchEntity/k?op=add"), json=1)
    assert unknown.status_code == 400
    assert "NoSuchEntity" in unknown.json()["error"] and "entity function" in unknown.json()["error"]
    absurd = await api.http.post(api.url("entities/clean?minIdleSeconds=1e300"))
    assert absurd.status_code == 400 and "minIdleSeconds" in absurd.json()["error"]
    ancient = await api.http.post(api.url("entities/clean?minIdleSeconds=1034554802644.7416"))
    assert ancient.status_code == 200, "idle since before year 1: a valid question whose answer is none"
    assert (await _rows(api.hub), await _queued_messages(api.hub)) == before


async def test_unknown_routes_and_other_hubs(api: Api) -> None:
    for method, path in (("GET", "nowhere"), ("PUT", "instances/x"), ("GET", "orchestrators/chain")):
        response = await api.http.request(method, api.url(path))
        assert response.status_code == 404 and "error" in response.json(), path
    other = await api.http.get(api.url("instances/x?taskHub=SomeOtherHub"))
    assert other.status_code == 400 and "SomeOtherHub" in other.json()["error"]
    same = await api.http.get(api.url(f"instances/x?taskHub={api.hub.names.hub.lower()}"))
    assert same.status_code == 404


# ---- system key -------------------------------------------------------------------------------


async def test_system_key_is_required_and_carried_in_urls(serve_api: ServeApi) -> None:
    api = await serve_api(system_key="s3cret")
    status_url = api.url("instances/nobody")
    assert (await api.http.get(status_url)).status_code == 401
    assert (await api.http.get(status_url + "?code=wrong")).status_code == 401
    assert (await api.http.get(status_url + "?code=s3cret")).status_code == 404
    assert (await api.http.get(status_url, headers={"x-functions-key": "s3cret"})).status_code == 404
    refused = await api.http.post(api.url("orchestrators/chain/keyless"), content=b"1")
    assert refused.status_code == 401
    assert await _rows(api.hub) == (0, 0)

    started = await api.http.post(api.url("orchestrators/chain/keyed?code=s3cret"), content=b"1")
    assert started.status_code == 202
    links = started.json()
    assert all("code=s3cret" in url for key, url in links.items() if key != "id")
    await api.client.wait_for_completion("keyed", TIMEOUT)
    status = await api.http.get(links["statusQueryGetUri"])
    assert (status.status_code, status.json()["output"]) == (200, 32)
    payload = api.df.create_http_management_payload("keyed")
    assert all("code=s3cret" in url for key, url in payload.items() if key != "id")
    assert (await api.http.delete(payload["purgeHistoryDeleteUri"])).json() == {"instancesDeleted": 1}
