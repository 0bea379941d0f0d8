"""``/metrics`` and ``/scale`` of an engine on real Azurite: the families after real work, a backlog made
with no worker running, a storage outage, and the scale hint on a hub with a backlog."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from durable_ext.app_loader import FunctionRegistry
from durable_ext.client import TaskHubClient
from durable_ext.config import DurableTaskOptions
from durable_ext.history import OrchestrationStatus
from durable_ext.host.probes import probes_app
from durable_ext.storage.account import StorageAccount
from durable_ext.storage.queues import partition_index
from durable_ext.storage.taskhub import TaskHub
from durable_ext.worker.engine import Engine
from tests.engine_support import FAST_LEASES, poll
from tests.host_support import free_port, sample_app_dir
from tests.test_worker_mode import start_and_worker, wait_for

TIMEOUT = 60.0


def engine_on(hub: TaskHub, registry: FunctionRegistry, interval: timedelta, **options: Any) -> Engine:
    """An engine with quick leases whose queue samples last ``interval``."""
    return Engine(
        hub,
        registry,
        DurableTaskOptions(hub_name=hub.names.hub, **options),
        partition_options=FAST_LEASES,
        sample_interval=interval,
    )


def http_to(engine: Engine, key: str | None = None) -> httpx.AsyncClient:
    """A client of the worker listener of ``engine`` (served in this event loop)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=probes_app(engine, key)), base_url="http://worker"
    )


async def scrape(http: httpx.AsyncClient) -> dict[str, list[Sample]]:
    """``/metrics``, parsed by prometheus_client's own parser: the samples of each family."""
    answer = await http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {family.name: family.samples for family in text_string_to_metric_families(answer.text)}


def value(families: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The one sample of ``name`` (a sample name, e.g. ``..._total``) with exactly ``labels``."""
    family = name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    found = [s.value for s in families[family] if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, families[family])
    return found[0]


@pytest.fixture
async def running(hub: TaskHub, registry: FunctionRegistry) -> AsyncIterator[Engine]:
    async with engine_on(hub, registry, timedelta(seconds=5)) as engine:
        yield engine


async def test_metrics_after_a_small_orchestration(
    hub: TaskHub, registry: FunctionRegistry, running: Engine
) -> None:
    client = TaskHubClient(hub, handoff=running)
    chain = await client.start_new("chain", "metrics-chain", json.dumps(1))
    catches = await client.start_new("catches", "metrics-catches", None)
    for instance in (chain, catches):
        state = await client.wait_for_completion(instance, timeout=TIMEOUT)
        assert state.runtime_status is OrchestrationStatus.Completed
    await poll(lambda: _owns_all(running), "the engine to own every partition")

    async with http_to(running) as http:
        families = await scrape(http)

    # Five `double` activities in the chain, one `always_fails` in the other.
    assert value(families, "durable_ext_activities_total", outcome="completed") == 5
    assert value(families, "durable_ext_activities_total", outcome="failed") == 1
    assert value(families, "durable_ext_activity_duration_seconds_count") == 6
    succeeded = value(families, "durable_ext_episodes_total", kind="orchestration", outcome="succeeded")
    # Each activity result is an episode at most; the start and result may share one.
    assert 2 <= succeeded <= 8
    assert not [s for s in families["durable_ext_episodes"] if s.labels.get("outcome") == "failed"]
    assert value(families, "durable_ext_episode_duration_seconds_count", kind="orchestration") == succeeded
    # Every episode took its history from the cache or from storage, and the chain's later ones hit.
    hits = value(families, "durable_ext_session_cache_hits_total")
    assert hits >= 1
    assert hits + value(families, "durable_ext_session_cache_misses_total") == succeeded
    assert value(families, "durable_ext_session_cache_entries") == 2
    # Both histories are held whole: each ends with its last episode's OrchestratorCompleted.
    held = [len((await hub.tracking.load_history(instance)).events) for instance in (chain, catches)]
    assert value(families, "durable_ext_session_cache_events") == sum(held)
    # The chain's episodes after its first continued the live orchestrator; each execution ran at least
    # once from event 0 (its first episode).
    continued = value(families, "durable_ext_orchestrator_runs_total", mode="continued")
    replayed = value(families, "durable_ext_orchestrator_runs_total", mode="replayed")
    assert continued >= 1 and replayed >= 2
    assert value(families, "durable_ext_leases_owned") == 4
    assert value(families, "durable_ext_storage_up") == 1
    # The starts were put on control queues (201), and the checkpoints went to the tables.
    requests = {
        (s.labels["kind"], s.labels["status"]): s.value for s in families["durable_ext_storage_requests"]
    }
    assert requests[("queue POST control/messages", "201")] >= 2
    assert any(kind.startswith("table ") for kind, _ in requests)
    assert all(count > 0 for count in requests.values())
    # Everything was consumed: nothing waits, nothing is old.
    queues = [queue.name for queue in hub.control_queues]
    for queue in queues:
        assert value(families, "durable_ext_control_queue_oldest_message_age_seconds", queue=queue) == 0
    assert value(families, "durable_ext_work_item_queue_length") == 0

    # A second engine in the process has a registry of its own: none of the first one's counts.
    async with http_to(engine_on(hub, registry, timedelta(seconds=5))) as http:
        other = await scrape(http)
    assert not [s for s in other["durable_ext_activities"] if s.name.endswith("_total")]
    assert value(other, "durable_ext_session_cache_hits_total") == 0


async def _owns_all(engine: Engine) -> bool:
    return len(engine.orchestrations.owned) == len(engine.hub.control_queues)


async def test_a_backlog_with_no_worker_running_shows_per_partition(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    # The engine is never started: it reads the queues, nobody consumes them.
    idle = engine_on(hub, registry, timedelta(0))
    client = TaskHubClient(hub)
    instances = [f"backlog-{n}" for n in range(6)]
    for instance in instances:
        await client.start_new("chain", instance, json.dumps(1))
    expected = {queue.name: 0 for queue in hub.control_queues}
    for instance in instances:
        expected[hub.control_queues[partition_index(instance, 4)].name] += 1

    async with http_to(idle) as http:

        async def aged() -> bool:
            families = await scrape(http)
            ages = {
                s.labels["queue"]: s.value
                for s in families["durable_ext_control_queue_oldest_message_age_seconds"]
            }
            return all(ages[name] > 0 for name, count in expected.items() if count)

        await poll(aged, "the backlog to age")
        families = await scrape(http)
    for name, count in expected.items():
        assert value(families, "durable_ext_control_queue_length", queue=name) == count
        age = value(families, "durable_ext_control_queue_oldest_message_age_seconds", queue=name)
        assert (age > 0) == bool(count)
    assert value(families, "durable_ext_work_item_queue_length") == 0
    assert value(families, "durable_ext_leases_owned") == 0
    assert value(families, "durable_ext_storage_up") == 1
    assert "durable_ext_activities" in families  # declared, with no samples yet
    # Two storage requests per queue and one partitions read make a sample.
    peeks = value(
        families, "durable_ext_storage_requests_total", kind="queue GET control/messages", status="200"
    )
    assert peeks >= 4


async def test_a_storage_outage_exports_what_is_known_and_refuses_the_hint(
    registry: FunctionRegistry,
) -> None:
    # Nothing listens on this port: every request is refused, as when storage is down.
    port = free_port()
    endpoints = f"http://127.0.0.1:{port}/devstoreaccount1"
    account = StorageAccount.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        f"BlobEndpoint={endpoints};QueueEndpoint={endpoints};TableEndpoint={endpoints}"
    )
    async with TaskHub(account, "Down" + uuid.uuid4().hex[:8]) as hub:
        engine = engine_on(hub, registry, timedelta(minutes=5))
        async with http_to(engine) as http:
            families = await scrape(http)
            assert value(families, "durable_ext_storage_up") == 0
            assert "durable_ext_control_queue_length" not in families
            assert "durable_ext_work_item_queue_length" not in families
            assert value(families, "durable_ext_leases_owned") == 0
            failed = {s.labels["kind"]: s.value for s in families["durable_ext_storage_requests"]}
            assert failed and all(
                s.labels["status"] == "none" for s in families["durable_ext_storage_requests"]
            )

            # Within the sample interval nobody asks storage again, however many scrapes come.
            await asyncio.gather(*(http.get("/metrics") for _ in range(5)))
            again = await scrape(http)
            assert {s.labels["kind"]: s.value for s in again["durable_ext_storage_requests"]} == failed

            hint = await http.get("/scale")
            assert hint.status_code == 503
            assert hint.json() == {
                "status": "Unavailable",
                "reason": "the task hub's queues could not be read",
            }


async def test_keys_guard_metrics_and_scale_but_not_the_probes(
    hub: TaskHub, registry: FunctionRegistry
) -> None:
    key = "metrics-test-key-0123456789"
    engine = engine_on(hub, registry, timedelta(seconds=5))
    async with http_to(engine, key) as http:
        for path in ("/metrics", "/scale"):
            assert (await http.get(path)).status_code == 401
            assert (await http.get(path, params={"code": "wrong"})).status_code == 401
            # A right header does not make up for a wrong code.
            both = await http.get(path, params={"code": "wrong"}, headers={"x-functions-key": key})
            assert both.status_code == 401
            assert (await http.get(path, params={"code": key})).status_code == 200
            assert (await http.get(path, headers={"x-functions-key": key})).status_code == 200
        assert (await http.get("/healthz")).status_code == 200
        for bad_value in ("-1", "two", "²", "1001", ""):
            bad = await http.get("/scale", params={"code": key, "minWorkers": bad_value})
            assert bad.status_code == 400 and "minWorkers" in bad.json()["error"]


async def test_scale_hint_on_a_hub_with_a_work_item_backlog(hub: TaskHub, registry: FunctionRegistry) -> None:
    function = registry.get("five_steps")
    assert function is not None
    gates: set[str] = function.callable.orchestrator_function.__globals__["OPEN_GATES"]
    async with engine_on(
        hub, registry, timedelta(milliseconds=200), max_concurrent_activity_functions=1
    ) as engine:
        client = TaskHubClient(hub, handoff=engine)
        # Each instance runs two steps, then holds the only activity slot until its gate opens: the
        # others' work items wait in the queue and age. One of them may be taken in memory for a slot
        # about to free (invisible, as a prefetched message is to the scale controller), so three
        # instances leave at least one visible.
        prefixes = [f"scale-{uuid.uuid4().hex[:6]}-{n}" for n in range(3)]
        instances = [await client.start_new("five_steps", prefix, json.dumps(prefix)) for prefix in prefixes]
        async with http_to(engine) as http:

            async def scaling_out() -> bool:
                answer = await http.get("/scale")
                assert answer.status_code == 200, answer.text
                return bool(answer.json()["action"] == "AddWorker")

            try:
                await poll(scaling_out, "the hint to ask for a worker", timeout=TIMEOUT)
                hint = (await http.get("/scale")).json()
            finally:
                gates.update(f"{prefix}-3" for prefix in prefixes)
        for instance in instances:
            await client.raise_event(instance, "extra", None)
        for instance in instances:
            state = await client.wait_for_completion(instance, timeout=TIMEOUT)
            assert state.runtime_status is OrchestrationStatus.Completed
    given = hint["inputs"]
    assert given["workerCount"] == 1 and given["partitionCount"] == 4 and given["samples"] == 5
    assert hint["recommendedWorkers"] == 2
    assert hint["reason"].startswith("Work-item queue latency: ")
    latencies = given["workItemQueue"]["latenciesMs"]
    assert latencies[-1] >= given["highLatencyThresholdMs"] and latencies[-2] > 0
    assert given["workItemQueue"]["length"] >= 1


def test_start_and_worker_serve_them_beside_the_probes(
    tmp_path: Path, azurite_connection_string: str
) -> None:
    hub = "Metrics" + uuid.uuid4().hex[:8]
    app = sample_app_dir(tmp_path, hub)
    key = "metrics-test-system-key-0123456789"
    with (
        start_and_worker(app, tmp_path, azurite_connection_string, {"DURABLE_EXT_SYSTEM_KEY": key}) as (
            start,
            worker,
            admin_port,
        ),
        httpx.Client(timeout=30) as http,
    ):
        # With the system key set, both of start's listeners want it; the probes do not.
        for url in (start.base_url, f"http://127.0.0.1:{admin_port}"):
            assert http.get(f"{url}/healthz").status_code == 200
            assert http.get(f"{url}/metrics").status_code == 401
            assert http.get(f"{url}/scale").status_code == 401
            metrics = http.get(f"{url}/metrics", params={"code": key})
            assert metrics.status_code == 200
            names = {family.name for family in text_string_to_metric_families(metrics.text)}
            assert {
                "durable_ext_leases_owned",
                "durable_ext_control_queue_length",
                "durable_ext_storage_up",
            } <= names
            hint = http.get(f"{url}/scale", headers={"x-functions-key": key})
            assert hint.status_code == 200 and hint.json()["inputs"]["partitionCount"] == 2

        # A worker without a key answers anyone; once the two share the hub, each owns a partition.
        def owned(url: str, **params: str) -> float:
            text = http.get(f"{url}/metrics", params=params).text
            families = {family.name: family.samples for family in text_string_to_metric_families(text)}
            return value(families, "durable_ext_leases_owned")

        wait_for(
            lambda: owned(worker.base_url) == 1 and owned(start.base_url, code=key) == 1,
            "the two processes to own one partition each",
        )
        # The hint counts both lease owners once its sample (kept a few seconds) is read after that.
        wait_for(
            lambda: http.get(f"{worker.base_url}/scale").json()["inputs"]["workerCount"] == 2,
            "the hint to count two workers",
        )
