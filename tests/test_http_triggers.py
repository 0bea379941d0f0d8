"""Tests of durable_ext.host.http: HTTP-triggered functions served over real HTTP.

The app in tests/apps/http_app is loaded once; tests start uvicorn on a free port with the routes they
need (in a thread, so servers outlive a test's event loop and stop together at the end of the module)
and talk to it with httpx. No storage is involved: the durable client test hands the function
a client binding JSON built here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import BaseRoute

from durable_ext.app_loader import FunctionRegistry, load_app
from durable_ext.errors import AppLoadError
from durable_ext.host.http import functions_route_template, http_trigger_routes
from durable_ext.invocations import Invocation

APP_DIR = Path(__file__).resolve().parent / "apps" / "http_app"

CONFIGURED_ORIGIN = "http://localhost:7071"

Serve = Callable[[list[BaseRoute]], Awaitable[httpx.AsyncClient]]


@pytest.fixture(scope="module")
def registry() -> Iterator[FunctionRegistry]:
    """The HTTP test app, loaded once for the module."""
    saved_path = list(sys.path)
    yield load_app(APP_DIR)
    sys.path[:] = saved_path


class _Servers:
    """uvicorn servers, each on a free port in a thread of its own, stopped together."""

    def __init__(self) -> None:
        self._running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(self, routes: list[BaseRoute]) -> str:
        """Serve ``routes``; the server's origin once it answers."""
        config = uvicorn.Config(
            Starlette(routes=routes), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        self._running.append((server, thread))
        deadline = time.monotonic() + 10
        while True:
            if server.started:
                port = server.servers[0].sockets[0].getsockname()[1]
                origin = f"http://127.0.0.1:{port}"
                httpx.get(f"{origin}/", timeout=5)  # any answer, 404 included, means it serves
                return origin
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited before it started")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start within 10 s")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop every server; they shut down in parallel (each takes a tick of its main loop)."""
        for server, _ in self._running:
            server.should_exit = True
        for _, thread in self._running:
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def servers() -> Iterator[_Servers]:
    """The module's servers, kept until its end so that stopping them costs one shutdown, not one each."""
    running = _Servers()
    yield running
    running.stop()


@pytest.fixture
async def serve(servers: _Servers) -> AsyncIterator[Serve]:
    """Start a server with the given routes; give an httpx client bound to it."""
    async with contextlib.AsyncExitStack() as clients:

        async def start(routes: list[BaseRoute]) -> httpx.AsyncClient:
            origin = servers.start(routes)
            return await clients.enter_async_context(httpx.AsyncClient(base_url=origin, timeout=10))

        yield start


def client_binding_json(request: Request) -> str:
    """A durable client binding as the .NET extension gives it.

    Its management URLs name the host's configured origin, not the request's: df must put the request's
    origin into the URLs it returns to the caller.
    """
    webhooks = f"{CONFIGURED_ORIGIN}/runtime/webhooks/durabletask"
    query = "taskHub=TestHub&connection=Storage&code=key"
    start = f"{webhooks}/orchestrators/{{functionName}}[/{{instanceId}}]"
    instance = f"{webhooks}/instances/INSTANCEID"
    return json.dumps(
        {
            "taskHubName": "TestHub",
            "creationUrls": {
                "createNewInstancePostUri": f"{start}?{query}",
                "createAndWaitOnNewInstancePostUri": (
                    f"{start}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{query}"
                ),
            },
            "managementUrls": {
                "id": "INSTANCEID",
                "statusQueryGetUri": f"{instance}?{query}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
                "purgeHistoryDeleteUri": f"{instance}?{query}",
                "restartPostUri": f"{instance}/restart?{query}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
            },
            "baseUrl": webhooks,
            "requiredQueryStringParameters": "code=key",
            # The client's own calls go to the host that served the request.
            "rpcBaseUrl": f"{request.base_url}runtime/webhooks/durabletask/",
            "httpBaseUrl": "",
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
        }
    )


def origin(client: httpx.AsyncClient) -> str:
    """scheme://host:port of the server a client talks to."""
    return str(client.base_url).rstrip("/")


@pytest.fixture(scope="module")
def api_origin(registry: FunctionRegistry, servers: _Servers) -> str:
    """The app under the default /api prefix, with durable client bindings and no function key."""
    return servers.start(http_trigger_routes(registry, "api", client_binding_json))


@pytest.fixture
async def api(api_origin: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the server at ``api_origin``."""
    async with httpx.AsyncClient(base_url=api_origin, timeout=10) as client:
        yield client


async def test_route_query_headers_and_body_reach_a_sync_function(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/items/042?color=red&color=blue&size=L", headers={"X-Test": "hi"}, content=b"payload"
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    echo = response.json()
    assert echo["method"] == "POST"
    assert echo["url"] == f"{origin(api)}/api/items/042?color=red&color=blue&size=L"
    # Route values stay the matched text, as Functions passes them; repeated parameters are joined.
    assert echo["route_params"] == {"id": "042"}
    assert echo["params"] == {"color": "red,blue", "size": "L"}
    assert echo["x_test"] == "hi"
    assert echo["body"] == "payload"
    # Sync functions run on the thread pool, not on the event loop's thread.
    assert echo["on_event_loop"] is False


async def test_route_matching_is_case_insensitive_and_ignores_a_trailing_slash(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/API/Items/7/")
    assert response.status_code == 200
    assert response.json()["route_params"] == {"id": "7"}


async def test_int_constraint_rejects_other_text(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/items/abc")).status_code == 404


async def test_catch_all_route_and_dict_return(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/files/a/b/c.txt")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"path": "a/b/c.txt"}
    # A catch-all also matches nothing at all.
    assert (await api.get("/api/files")).json() == {"path": None}


async def test_literal_route_wins_over_catch_all_registered_before_it(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/files/readme")
    assert response.text == "readme"


async def test_optional_segment_and_str_return(api: httpx.AsyncClient) -> None:
    named = await api.get("/api/opt/ada")
    assert named.status_code == 200
    assert named.headers["content-type"] == "text/plain; charset=utf-8"
    assert named.text == "hello ada"
    assert (await api.get("/api/opt")).text == "hello nobody"


async def test_default_route_value(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/greet")).text == "hi world"
    assert (await api.get("/api/greet/ada")).text == "hi ada"


async def test_json_body_round_trip_in_an_async_function(api: httpx.AsyncClient) -> None:
    payload = {"name": "ada", "tags": ["x", "y"], "n": 3.5, "nested": {"ok": True}}
    response = await api.post("/api/json", json=payload)
    assert response.status_code == 200
    assert response.json() == {"received": payload}


async def test_methods_are_restricted(api: httpx.AsyncClient) -> None:
    response = await api.delete("/api/items/1")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}
    assert (await api.get("/api/json")).status_code == 405


async def test_http_response_status_headers_and_mimetype_are_kept(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/custom")
    assert response.status_code == 201
    assert response.headers["x-custom"] == "yes"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "text/html; charset=latin-1"
    assert response.content == b"<b>made</b>"


async def test_bytes_return_is_octet_stream_with_a_portability_warning(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="durable_ext.host.http"):
        response = await api.get("/api/raw")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b"\x00\x01"
    # The Python worker in Azure fails such an invocation; say so before the app is deployed.
    assert any("Functions.raw returned bytes" in r.getMessage() for r in caplog.records)


async def test_none_return_fails_the_invocation_as_in_azure(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/nothing")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error.startswith("Exception while executing function: Functions.nothing")
    assert "NoneType" in error


async def test_user_exception_is_a_500_without_traceback(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="Function.boom"):
        response = await api.get("/api/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "Exception while executing function: Functions.boom"}
    assert "Traceback" not in response.text
    assert "secret detail" not in response.text
    # The exception is the invocation's failure, which the host's Executed line reports.
    [executing, executed] = [r for r in caplog.records if r.name == "Function.boom"]
    assert executing.getMessage().startswith("Executing 'Functions.boom' (Reason='This function was")
    assert executed.levelno == logging.ERROR
    assert executed.getMessage().startswith("Executed 'Functions.boom' (Failed, Id=")
    invocation: Invocation = executed.invocation
    assert invocation.failure is not None
    assert invocation.failure.message == "ValueError: secret detail"
    # Only the app's frames: not durable_ext's, nor those of the thread pool that ran the function.
    [frame] = [line for line in invocation.failure.stack.splitlines() if line.startswith("  File ")]
    assert re.fullmatch(r'  File ".*/http_app/function_app\.py", line \d+, in boom', frame), frame
    assert invocation.duration_ms is not None and invocation.duration_ms >= 0


async def test_one_invocation_per_call_of_the_function(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="Function"):
        await api.get("/api/opt/x")
        await api.get("/api/missing")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("Function.")]
    assert [line.split(" (")[0] for line in lines] == [
        "Executing 'Functions.optional'",
        "Executed 'Functions.optional'",
    ]
    assert "(Succeeded, Id=" in lines[1]


@pytest.mark.parametrize(("prefix", "path"), [("", "/opt/x"), ("custom", "/custom/opt/x")])
async def test_route_prefix(registry: FunctionRegistry, serve: Serve, prefix: str, path: str) -> None:
    api = await serve(http_trigger_routes(registry, prefix, None))
    response = await api.get(path)
    assert response.status_code == 200
    assert response.text == "hello x"
    assert (await api.get("/api/opt/x")).status_code == 404


async def test_durable_client_function_gets_a_client_from_the_binding(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/start")
    assert response.status_code == 202
    assert response.headers["x-client-type"] == "DurableOrchestrationClient"
    assert response.headers["x-task-hub"] == "TestHub"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "10"
    location = response.headers["location"]
    assert location.startswith(f"{origin(api)}/runtime/webhooks/durabletask/instances/abc?")
    assert response.json()["statusQueryGetUri"] == location
    assert response.json()["id"] == "abc"


async def test_durable_client_function_without_bindings_is_a_clear_500(
    registry: FunctionRegistry, serve: Serve
) -> None:
    api = await serve(http_trigger_routes(registry, "api", None))
    response = await api.get("/api/start")
    assert response.status_code == 500
    assert "durable client" in response.json()["error"]


async def test_function_key_is_enforced_when_configured(registry: FunctionRegistry, serve: Serve) -> None:
    api = await serve(http_trigger_routes(registry, "api", None, function_key="s3cret"))
    assert (await api.get("/api/secured")).status_code == 401
    assert (await api.get("/api/secured", params={"code": "wrong"})).status_code == 401
    assert (await api.get("/api/secured", params={"code": "s3cret"})).text == "ok"
    assert (await api.get("/api/secured", headers={"x-functions-key": "s3cret"})).text == "ok"
    # Anonymous functions need no key.
    assert (await api.get("/api/opt/x")).status_code == 200


async def test_function_level_is_open_without_a_configured_key(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/secured")).text == "ok"


async def test_body_size_limit(registry: FunctionRegistry, serve: Serve) -> None:
    api = await serve(http_trigger_routes(registry, "api", None, max_body_bytes=1024))
    assert (await api.post("/api/upload", content=b"x" * 1024)).text == "1024"
    declared = await api.post("/api/upload", content=b"x" * 1025)
    assert declared.status_code == 413
    assert "1024 bytes" in declared.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y" * 512

    # Chunked transfer: no Content-Length, the limit is found while reading.
    streamed = await api.post("/api/upload", content=chunks())
    assert streamed.status_code == 413


async def test_unknown_route_is_404(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/nope")).status_code == 404
    assert (await api.get("/items/1")).status_code == 404


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("items/{id:int}", "/items/{id:functions_int}"),
        ("/a/{name}/", "/a/{name:str}"),
        ("files/{*rest}", "/files/{rest:path}"),
        ("opt/{name?}", "/opt/{name:str}"),
        ("v{version:alpha}/x", "/v{version:functions_alpha}/x"),
        ("g/{id:GUID}", "/g/{id:functions_guid}"),
    ],
)
def test_functions_route_template(template: str, path: str) -> None:
    assert functions_route_template(template) == path


@pytest.mark.parametrize(
    "template",
    ["a/{*rest}/b", "a/{x?}/b", "a/x{y?}", "a//b", "a/{my-name}", "a/{x"],
)
def test_invalid_route_templates(template: str) -> None:
    with pytest.raises(ValueError, match="route"):
        functions_route_template(template)


def test_invalid_route_template_is_an_app_load_error(registry: FunctionRegistry) -> None:
    [items] = [f for f in registry.http_functions if f.function_name == "items"]
    assert items.http is not None
    broken = FunctionRegistry(
        (dataclasses.replace(items, http=dataclasses.replace(items.http, route="a/{x?}/b")),)
    )
    with pytest.raises(AppLoadError, match="HTTP function items"):
        http_trigger_routes(broken, "api", None)
