"""Bad input at the management API's door: 400 with nothing written, and no stored value ever a 500.

The API is served on real Azurite without an engine, so whatever a request wrote stays where it is:
queued messages are not consumed, rows are not changed. Each refusal is checked against that footprint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import azure.durable_functions as df
import httpx
import pytest
from azure.durable_functions.models.utils import http_utils

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.entities import SchedulerState, entity_status_json
from durable_ext.history import OrchestrationStatus
from durable_ext.host.api import CONTINUATION_HEADER
from durable_ext.host.df_json import MANAGEMENT_PREFIX
from durable_ext.storage.taskhub import TaskHub
from durable_ext.storage.tracking import InstanceState
from tests.test_management_api import TIMEOUT, _queued_messages, _rows, serve_management

# Bodies that are not JSON every reader can handle; each must be refused wherever a payload enters.
BAD_BODIES = {
    "NaN": "NaN",
    "Infinity": "[1, Infinity]",
    "-Infinity": '{"a": -Infinity}',
    "a number beyond a double": "1e999",
    "a 4301-digit integer": "9" * 4301,
    "1000 levels of nesting": "[" * 1000 + "]" * 1000,
    "513 levels of nesting": "[" * 513 + "]" * 513,
    "a lone surrogate": '{"a": "\\ud800"}',
    "a lone surrogate in a key": '{"\\udc00": 1}',
    "a lone surrogate in a JSON string": json.dumps('"\ud800"'),
}
# The df client's mount unwraps its JSON-in-JSON encoding once, so the JSON inside must be valid too.
DF_CLIENT_BAD_BODIES = {
    **BAD_BODIES,
    "NaN in JSON-in-JSON (the df client's encoding)": json.dumps("NaN"),
    "a 4301-digit integer in JSON-in-JSON": json.dumps("9" * 4301),
    "1000 levels in JSON-in-JSON": json.dumps("[" * 1000 + "]" * 1000),
    "a lone surrogate escaped in JSON-in-JSON": json.dumps(json.dumps("\ud800")),
}
OUT_OF_RANGE_TIMES = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")
LONG = 10_000


@dataclass
class Door:
    """The management API on a hub no engine works on."""

    base_url: str
    hub: TaskHub
    client: TaskHubClient
    http: httpx.AsyncClient
    df: df.DurableOrchestrationClient
    rpc_base_url: str

    def url(self, path: str) -> str:
        return f"{self.base_url}{MANAGEMENT_PREFIX}/{path}"

    def mounts(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, base URL, bodies each must refuse) of the public mount and of the df client's."""
        return [
            ("public", self.url(""), BAD_BODIES),
            ("df client's", self.rpc_base_url, DF_CLIENT_BAD_BODIES),
        ]

    async def footprint(self) -> tuple[int, int, int]:
        """(Instances rows, History rows, queued messages): what a refused request must leave as it was."""
        return (*await _rows(self.hub), await _queued_messages(self.hub))


@pytest.fixture
async def door(hub: TaskHub, registry: FunctionRegistry) -> AsyncIterator[Door]:
    client = TaskHubClient(hub)
    async with AsyncExitStack() as stack:
        base_url, binding = await serve_management(stack, client, registry)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=TIMEOUT))
        rpc_base_url = json.loads(binding)["rpcBaseUrl"]
        yield Door(base_url, hub, client, http, df.DurableOrchestrationClient(binding), rpc_base_url)
    # df keeps one aiohttp session per process, bound to this test's event loop.
    await http_utils._close_session()


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"the response holds {name}, which is not JSON")


def _strict_json(response: httpx.Response) -> Any:
    """The body, which must be UTF-8 JSON without NaN or Infinity."""
    return json.loads(response.content, parse_constant=_refuse_constant)


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode()


def _refusal_error(response: httpx.Response, message: str, case: str) -> str | None:
    """Why ``response`` is not a 400 whose error names ``message``; None if it is."""
    if response.status_code != 400 or message not in response.json()["error"]:
        return f"{case}: {response.status_code} {response.text[:200]}"
    return None


def _assert_400(response: httpx.Response, message: str, case: str) -> None:
    error = _refusal_error(response, message, case)
    assert error is None, error


# ---- payloads -----------------------------------------------------------------------------------


async def test_starts_with_non_json_payloads_are_400_and_write_nothing(door: Door) -> None:
    errors = []
    for mount, base, bodies in door.mounts():
        for index, (case, body) in enumerate(bodies.items()):
            response = await door.http.post(f"{base}orchestrators/chain/bad-{index}", content=body)
            errors.append(_refusal_error(response, "request body", f"{case} on the {mount} mount"))
    assert [error for error in errors if error] == []
    assert await door.footprint() == (0, 0, 0)


async def test_events_and_signals_with_non_json_payloads_are_400_and_write_nothing(door: Door) -> None:
    await door.client.start_new("approval", "waiting", "30")
    before = await door.footprint()
    assert before == (1, 0, 1)
    json_content = {"content-type": "application/json"}
    errors = []
    for mount, base, bodies in door.mounts():
        for case, body in bodies.items():
            event = await door.http.post(
                f"{base}instances/waiting/raiseEvent/Approval", content=body, headers=json_content
            )
            errors.append(_refusal_error(event, "request body", f"raiseEvent with {case} ({mount})"))
            signal = await door.http.post(
                f"{base}entities/counter/k?op=add", content=body, headers=json_content
            )
            errors.append(_refusal_error(signal, "request body", f"signal with {case} ({mount})"))
    assert [error for error in errors if error] == []
    assert await door.footprint() == before


async def test_the_df_client_cannot_start_or_raise_nan(door: Door) -> None:
    with pytest.raises(Exception, match="NaN"):
        await door.df.start_new("chain", "df-nan", float("nan"))
    assert await door.footprint() == (0, 0, 0)
    await door.client.start_new("approval", "df-waiting", "30")
    with pytest.raises(Exception, match="application/json"):
        await door.df.raise_event("df-waiting", "Approval", float("inf"))
    assert await door.footprint() == (1, 0, 1)


async def test_json_strings_that_hold_plain_text_are_still_stored_as_strings(door: Door) -> None:
    response = await door.http.post(door.url("orchestrators/chain/text"), content=json.dumps("hello"))
    assert response.status_code == 202
    status = await door.http.get(door.url("instances/text"))
    assert status.json()["input"] == "hello"


# ---- query parameters ---------------------------------------------------------------------------


async def test_time_filters_outside_utc_years_1_to_9999_are_400(door: Door) -> None:
    await door.client.start_new("chain", "kept", "1")
    before = await door.footprint()
    for moment in OUT_OF_RANGE_TIMES:
        for method, path, name in (
            ("GET", "instances", "createdTimeFrom"),
            ("GET", "instances", "createdTimeTo"),
            ("GET", "entities", "lastOperationTimeFrom"),
            ("GET", "entities", "lastOperationTimeTo"),
            ("DELETE", "instances", "createdTimeFrom"),
        ):
            response = await door.http.request(method, door.url(path), params={name: moment})
            _assert_400(response, name, f"{method} {path}?{name}={moment}")
    listed = await door.http.get(door.url("instances"), params={"createdTimeFrom": "0001-01-01T00:00:00Z"})
    assert [item["instanceId"] for item in listed.json()] == ["kept"]
    assert await door.footprint() == before


async def test_prefixes_next_to_surrogates_list_exactly_their_instances(door: Door) -> None:
    ids = ["p\ud7ff", "p\ud7ff-1", "p\U0001f600", "p\U0001f600-1", "p\ue000", "p\uffff", "p\uffff-1", "q"]
    for instance_id in ids:
        await door.client.start_new("chain", instance_id, "1")
    expected = {
        "p\ud7ff": {"p\ud7ff", "p\ud7ff-1"},
        "p\U0001f600": {"p\U0001f600", "p\U0001f600-1"},
        "p\uffff": {"p\uffff", "p\uffff-1"},
        "p": set(ids) - {"q"},
    }
    for prefix, wanted in expected.items():
        response = await door.http.get(door.url("instances"), params={"instanceIdPrefix": prefix})
        assert response.status_code == 200, f"{prefix!r}: {response.text[:300]}"
        assert {item["instanceId"] for item in response.json()} == wanted, repr(prefix)


async def test_overlong_prefixes_and_entity_names_are_400(door: Door) -> None:
    long_name = "n" * LONG
    cases = {
        f"instances?instanceIdPrefix={'x' * LONG}": "at most 256",
        f"instances?instanceIdPrefix={'x' * 257}": "at most 256",
        f"entities/{long_name}": "at most 256",
        f"entities/{long_name}/k": "at most 256",
    }
    for path, message in cases.items():
        _assert_400(await door.http.get(door.url(path)), message, path[:40])
    signal = await door.http.post(door.url(f"entities/{long_name}/k?op=add"), json=1)
    _assert_400(signal, long_name[:40], "signal")
    assert (await door.http.get(door.url(f"instances?instanceIdPrefix={'x' * 256}"))).status_code == 200
    assert await door.footprint() == (0, 0, 0)


async def test_invalid_continuation_tokens_are_400(door: Door) -> None:
    tokens = {
        "a lone surrogate": _token('{"PartitionKey":"\\ud800"}'),
        "a raw lone surrogate": _token('{"PartitionKey":"\ud800"}'),
        "deep nesting": _token("[" * 5000),
        "NaN": _token('{"PartitionKey":NaN}'),
        "not UTF-8": base64.urlsafe_b64encode(b'{"PartitionKey":"\xff"}').decode(),
        "not base64": "%%%",
        "not JSON": _token("PartitionKey"),
    }
    errors = []
    for case, token in tokens.items():
        for path in ("instances", "entities"):
            response = await door.http.get(door.url(path), headers={CONTINUATION_HEADER: token})
            errors.append(_refusal_error(response, "continuation token", f"{path} with {case}"))
    assert [error for error in errors if error] == []


# ---- stored values written by other tools -------------------------------------------------------


async def test_stored_values_that_are_not_strict_json_are_served_as_strings(door: Door) -> None:
    now = datetime.now(UTC)
    odd = {
        "input": "NaN",
        "output": "[1, Infinity]",
        "custom_status": '{"a": "\\ud800"}',
    }
    await door.hub.tracking.insert_instance(
        InstanceState("odd-ended", name="chain", runtime_status=OrchestrationStatus.Completed, **odd)
    )
    await door.hub.tracking.insert_instance(
        InstanceState(
            "odd-running",
            name="chain\ud800",
            runtime_status=OrchestrationStatus.Running,
            input="9" * 5000,
            output="[" * 600 + "]" * 600,
            custom_status='"\ud800"',
            created_time=now,
        )
    )
    ended = await door.http.get(door.url("instances/odd-ended"))
    assert ended.status_code == 200, ended.text[:300]
    body = _strict_json(ended)
    assert (body["input"], body["output"], body["customStatus"]) == tuple(odd.values())
    running = await door.http.get(door.url("instances/odd-running"))
    assert running.status_code == 202, running.text[:300]
    assert running.json()["input"] == "9" * 5000 and running.json()["name"] == "chain\ud800"
    listed = await door.http.get(door.url("instances"))
    assert listed.status_code == 200, listed.text[:300]
    assert {item["instanceId"] for item in listed.json()} == {"odd-ended", "odd-running"}
    with_created = await door.http.get(door.url("instances"), params={"createdTimeFrom": now.isoformat()})
    assert [item["instanceId"] for item in with_created.json()] == ["odd-running"]


async def test_stored_entity_state_that_is_not_strict_json_is_served_as_a_string(door: Door) -> None:
    scheduler = SchedulerState(entity_exists=True, state="NaN")
    await door.hub.tracking.insert_instance(
        InstanceState(
            "@counter@nan",
            runtime_status=OrchestrationStatus.Running,
            input=scheduler.to_json_text(),
            custom_status=entity_status_json(scheduler),
            last_updated_time=datetime.now(UTC),
        )
    )
    state = await door.http.get(door.url(f"entities/counter/{quote('nan')}"))
    assert state.status_code == 200 and _strict_json(state) == "NaN", state.text
    listed = await door.http.get(door.url("entities?fetchState=true"))
    assert listed.status_code == 200, listed.text[:300]
    assert [(item["entityId"]["key"], item["state"]) for item in _strict_json(listed)] == [("nan", "NaN")]
