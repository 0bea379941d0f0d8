"""The measured workloads (issue 8): each takes a ready :class:`BenchEnv` and returns a Measurement.

Every scenario checks the outputs of its orchestrations, so lost or duplicated work fails the run
(:class:`~benchmarks.harness.BenchmarkError`) instead of producing a figure. Time runs from the first
client call of the workload to the moment the client sees the last instance Completed; the engine's
storage requests are counted over the same span.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from starlette.applications import Starlette

from benchmarks import MANY_STEPS
from benchmarks.browser import RenderTarget, browser_unavailable, render_times
from benchmarks.harness import BenchEnv, BenchmarkError, check_output
from benchmarks.host import HttpDriver, running_host
from benchmarks.stats import percentile
from durable_ext.client import TaskHubClient
from durable_ext.dashboard.api import DashboardOptions, dashboard_mount
from durable_ext.dashboard.hubs import DashboardHub, HubSet
from durable_ext.history import (
    EventType,
    OrchestrationStatus,
    OrchestratorCompletedEvent,
    OrchestratorStartedEvent,
    TimerFiredEvent,
)
from durable_ext.storage.tracking import InstanceState


@dataclass(frozen=True)
class Sizes:
    """How big each workload is."""

    sequential: int
    longchain: int
    """Steps of the long chain, measured against a chain of ``sequential`` steps in the same run."""
    fanout100: int
    fanout1000: int
    many: int
    events: int
    signals: int
    latency: int
    idle_seconds: float
    timers: int
    timer_idle_seconds: float
    """Idle time before the timers start: the pollers back off meanwhile."""
    scale: int
    """Orchestrations of MANY_STEPS activities started at once in ``scale10k``."""
    scale_fanout: int
    """Activities of the one orchestration fanning out in ``scale10k``."""
    scale_timeout: float
    """Seconds each of ``scale10k``'s two workloads may take before it counts as hung."""
    host_sequential: int
    """Activities of the sequential orchestration in ``host`` (in-process and through HTTP)."""
    host_fanout: int
    """Activities of the fan-out in ``host``."""
    probe_iterations: int
    timeout: float
    """Seconds one scenario's workload may take before it counts as hung."""
    dashboard_rows: int = 10_000
    """Instances rows in the hub the dashboard scenario lists."""
    dashboard_activities: int = 500
    """Activities of the orchestration whose history (4 events per activity) the dashboard shows."""


FULL = Sizes(
    sequential=100,
    longchain=2000,
    fanout100=100,
    fanout1000=1000,
    many=500,
    events=200,
    signals=1000,
    latency=100,
    idle_seconds=60.0,
    timers=100,
    timer_idle_seconds=40.0,
    scale=10_000,
    scale_fanout=10_000,
    scale_timeout=3600.0,
    host_sequential=100,
    host_fanout=300,
    probe_iterations=200,
    timeout=600.0,
)
QUICK = Sizes(
    sequential=20,
    longchain=200,
    fanout100=100,
    fanout1000=100,
    many=50,
    events=20,
    signals=100,
    latency=10,
    idle_seconds=10.0,
    timers=10,
    timer_idle_seconds=5.0,
    scale=100,
    scale_fanout=200,
    scale_timeout=300.0,
    host_sequential=20,
    host_fanout=50,
    probe_iterations=50,
    timeout=120.0,
    dashboard_rows=500,
    dashboard_activities=50,
)


@dataclass
class Measurement:
    """What one scenario measured."""

    figure: float
    unit: str
    size: str
    """The workload size, for the report (e.g. ``n=100``)."""
    steps: int
    """How many steps the figure counts (activities, orchestrations, events, runs); 0 if none."""
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    higher_is_better: bool = True
    requests: int = 0
    """Storage requests the engine sent while the workload ran."""
    requests_by_kind: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class _Span:
    """Times a workload, counts the engine's requests and the CPU time spent over it.

    CPU: this process (engine, client, harness) via ``time.process_time``; Azurite, the only child
    process while a scenario runs, from ``/proc/<pid>/stat``. Both as percent of one core, to tell a
    storage-bound run (Azurite near 100 %) from a Python-bound one.
    """

    def __init__(self, env: BenchEnv) -> None:
        self._env = env
        self.seconds = 0.0
        self.requests = 0
        self.by_kind: dict[str, int] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        self._env.reset_counts()
        cpu_started = time.process_time()
        children_started = _children_cpu_seconds()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds = time.perf_counter() - started
            self.requests, self.by_kind = self._env.counter.snapshot()
            python = time.process_time() - cpu_started
            children = _children_cpu_seconds()
            azurite = sum(children.get(pid, 0.0) - before for pid, before in children_started.items())
            self.cpu = {
                "python_cpu_pct": 100 * python / self.seconds,
                "azurite_cpu_pct": 100 * azurite / self.seconds,
            }

    def result(self, figure: float, unit: str, size: str, steps: int, **kwargs: Any) -> Measurement:
        measurement = Measurement(
            figure=figure,
            unit=unit,
            size=size,
            steps=steps,
            seconds=self.seconds,
            requests=self.requests,
            requests_by_kind=self.by_kind,
            **kwargs,
        )
        measurement.extra.update(self.cpu)
        return measurement


def _children_cpu_seconds() -> dict[int, float]:
    """User + system CPU seconds of each child process of this one (Linux; empty elsewhere)."""
    pids: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in children.read_text().split())
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    seconds: dict[int, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        fields = stat.rsplit(")", 1)[1].split()
        seconds[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return seconds


async def sequential(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(a) One orchestration calling ``sizes.sequential`` activities one after another."""
    count = sizes.sequential
    span = _Span(env)
    with span.measure():
        await env.run("sequential", count, expected=count, instance_id="sequential", timeout=sizes.timeout)
    return span.result(count / span.seconds, "activities/s", f"n={count}", count)


async def longchain(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(i) A chain of ``sizes.longchain`` activities, and one of ``sizes.sequential`` in the same run.

    Each episode of a chain adds to its history; when an episode costs the same however long the
    history is (warm continuation, durable_ext/replay.py), the long chain runs at the short one's rate.
    The figure is the long chain's rate; ``long_vs_short`` the ratio of the two.
    """
    short_count, long_count = sizes.sequential, sizes.longchain
    short = _Span(env)
    with short.measure():
        await env.run(
            "sequential", short_count, expected=short_count, instance_id="chain-short", timeout=sizes.timeout
        )
    span = _Span(env)
    with span.measure():
        await env.run(
            "sequential", long_count, expected=long_count, instance_id="chain-long", timeout=sizes.timeout
        )
    short_rate, rate = short_count / short.seconds, long_count / span.seconds
    return span.result(
        rate,
        "activities/s",
        f"n={long_count}",
        long_count,
        extra={"short_n": short_count, "short_per_s": short_rate, "long_vs_short": rate / short_rate},
    )


async def _fanout(env: BenchEnv, count: int, timeout: float) -> Measurement:
    span = _Span(env)
    with span.measure():
        await env.run(
            "fanout", count, expected=count * (count + 1) // 2, instance_id="fanout", timeout=timeout
        )
    return span.result(count / span.seconds, "activities/s", f"n={count}", count)


async def fanout100(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(b) Fan-out/fan-in of ``sizes.fanout100`` activities."""
    return await _fanout(env, sizes.fanout100, sizes.timeout)


async def fanout1000(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(b) Fan-out/fan-in of ``sizes.fanout1000`` activities."""
    return await _fanout(env, sizes.fanout1000, sizes.timeout)


async def many(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(c)+(h) ``sizes.many`` orchestrations of MANY_STEPS sequential activities, started together.

    Also records this process's peak RSS while they run (the engine, the client and the harness all
    live in it), and each instance's CreatedTime → CompletedTime as p50/p99.
    """
    return await _many(env, sizes.many, "many", sizes.timeout)


async def _many(env: BenchEnv, count: int, prefix: str, timeout: float) -> Measurement:
    steps = MANY_STEPS
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    span = _Span(env)
    async with PeakRss() as rss:
        with span.measure():
            await asyncio.gather(*(env.client.start_new("sequential", i, json.dumps(steps)) for i in ids))
            states = await env.wait_all(ids, timeout)
    for state in states:
        check_output(env.hub_name, state, steps)
    durations = [
        (s.completed_time - s.created_time).total_seconds() * 1000
        for s in states
        if s.completed_time is not None and s.created_time is not None
    ]
    return span.result(
        count / span.seconds,
        "orchestrations/s",
        f"{count}x{steps}",
        count,
        p50_ms=percentile(durations, 50) if durations else None,
        p99_ms=percentile(durations, 99) if durations else None,
        extra={"peak_rss_mb": rss.peak_mb, "rss_method": rss.method, "activities": count * steps},
    )


async def scale10k(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(j) ``sizes.scale`` orchestrations of MANY_STEPS activities started at once, then one
    orchestration fanning out ``sizes.scale_fanout`` activities, each with this process's peak RSS.

    ``many``'s workload (``sizes.many`` orchestrations) runs first on the same hub and engine, so the
    throughput is compared with it within one run (``vs_many``).
    """
    reference = await _many(env, sizes.many, "reference", sizes.timeout)
    measured = await _many(env, sizes.scale, "scale", sizes.scale_timeout)
    fan = sizes.scale_fanout
    async with PeakRss() as rss:
        started = time.perf_counter()
        await env.run(
            "fanout",
            fan,
            expected=fan * (fan + 1) // 2,
            instance_id="scale-fanout",
            timeout=sizes.scale_timeout,
        )
        fan_seconds = time.perf_counter() - started
    measured.extra.update(
        {
            "reference_size": reference.size,
            "reference_per_s": reference.figure,
            "reference_peak_rss_mb": reference.extra["peak_rss_mb"],
            "vs_many": measured.figure / reference.figure,
            "fanout": fan,
            "fanout_seconds": fan_seconds,
            "fanout_per_s": fan / fan_seconds,
            "fanout_peak_rss_mb": rss.peak_mb,
        }
    )
    return measured


async def events(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(d) ``sizes.events`` external events raised one at a time to one waiting instance.

    The instance is started and seen Running first; then all events are raised back to back with
    ``TaskHubClient.raise_event`` (each waits for its enqueue), and the clock stops when the client
    sees the instance Completed with the sum of the event payloads.
    """
    count = sizes.events
    instance_id = await env.client.start_new("events", "events", json.dumps(count))
    await _wait_running(env, instance_id, sizes.timeout)
    span = _Span(env)
    with span.measure():
        raise_started = time.perf_counter()
        for _ in range(count):
            await env.client.raise_event(instance_id, "tick", "1")
        raising = time.perf_counter() - raise_started
        state = await env.wait(instance_id, sizes.timeout)
    check_output(env.hub_name, state, count)
    return span.result(
        count / span.seconds,
        "events/s",
        f"n={count}",
        count,
        extra={"raise_seconds": raising, "raise_per_s": count / raising},
    )


SIGNAL_SENDERS = 16
"""Concurrent senders in the entity scenario."""


async def entities(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(e) ``sizes.signals`` signals to one counter entity from ``SIGNAL_SENDERS`` concurrent senders.

    One awaited queue put at a time caps a single sender near the storage ceiling's put rate, which
    would measure the client, not the entity. The clock stops when the entity's stored state shows
    every signal applied exactly once.
    """
    count = sizes.signals
    entity_id = "@counter@bench"
    loop = asyncio.get_running_loop()
    span = _Span(env)

    async def sender(share: int) -> None:
        for _ in range(share):
            await env.client.signal_entity(entity_id, "add", "1")

    shares = [
        count // SIGNAL_SENDERS + (1 if i < count % SIGNAL_SENDERS else 0) for i in range(SIGNAL_SENDERS)
    ]
    with span.measure():
        await asyncio.gather(*(sender(share) for share in shares))
        deadline = loop.time() + sizes.timeout
        while True:
            snapshot = await env.client.read_entity_state(entity_id)
            value = json.loads(snapshot.state) if snapshot.state else 0
            if value >= count:
                break
            if loop.time() > deadline:
                raise BenchmarkError(
                    f"hub {env.hub_name} entity {entity_id}: {value} of {count} signals applied"
                )
            await asyncio.sleep(0.01)
    if value != count:
        raise BenchmarkError(f"hub {env.hub_name} entity {entity_id}: {value} applied for {count} signals")
    return span.result(count / span.seconds, "signals/s", f"n={count}", count)


async def _wait_running(env: BenchEnv, instance_id: str, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await env.client.get_status(instance_id)
        if state is not None and state.runtime_status is OrchestrationStatus.Running:
            return
        if loop.time() > deadline:
            seen = state.runtime_status if state is not None else None
            raise BenchmarkError(
                f"hub {env.hub_name} instance {instance_id}: not Running after {timeout:g} s ({seen})"
            )
        await asyncio.sleep(0.01)


LATENCY_POLL = 0.005
"""Seconds between status reads while a latency run waits: the resolution of each sample."""


async def latency(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(f) start_new → client sees Completed, for a one-activity orchestration, runs one after another."""
    runs = sizes.latency
    samples: list[float] = []
    span = _Span(env)
    with span.measure():
        for i in range(runs):
            started = time.perf_counter()
            await env.run(
                "one_activity",
                None,
                expected=1,
                instance_id=f"latency-{i:04d}",
                timeout=sizes.timeout,
                poll_interval=LATENCY_POLL,
            )
            samples.append((time.perf_counter() - started) * 1000)
    p50 = percentile(samples, 50)
    pickups = await _start_pickups(env, [f"latency-{i:04d}" for i in range(runs)])
    return span.result(
        p50,
        "ms",
        f"runs={runs}",
        runs,
        p50_ms=p50,
        p99_ms=percentile(samples, 99),
        higher_is_better=False,
        extra={
            "mean_ms": sum(samples) / len(samples),
            "max_ms": max(samples),
            "poll_ms": LATENCY_POLL * 1000,
            "start_pickup_p50_ms": percentile(pickups, 50) if pickups else None,
            "start_pickup_p99_ms": percentile(pickups, 99) if pickups else None,
        },
    )


async def _start_pickups(env: BenchEnv, instance_ids: list[str]) -> list[float]:
    """Per instance, ExecutionStarted → first OrchestratorStarted in its history (ms): how long the
    start message waited in the control queue before an episode took it (read after the clock stopped).
    """
    pickups: list[float] = []
    for instance_id in instance_ids:
        history = await env.client.hub.tracking.load_history(instance_id)
        started = next((e for e in history.events if e.event_type is EventType.ExecutionStarted), None)
        episode = next((e for e in history.events if e.event_type is EventType.OrchestratorStarted), None)
        if started is not None and episode is not None:
            pickups.append((episode.timestamp - started.timestamp).total_seconds() * 1000)
    return pickups


async def idle(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(g) The engine's storage requests per second per partition over an idle window.

    The window starts right after the warm-up orchestration completed, so it includes the polling
    back-off ramp from 50 ms up to maxQueuePollingInterval (30 s); the rate over the second half of
    the window is reported too, as the steadier figure.
    """
    window = sizes.idle_seconds
    partitions = env.partition_count
    span = _Span(env)
    with span.measure():
        await asyncio.sleep(window / 2)
        first_half, _ = env.counter.snapshot()
        await asyncio.sleep(window / 2)
    second_half = span.requests - first_half
    return span.result(
        span.requests / span.seconds / partitions,
        "req/s/partition",
        f"{window:g}s",
        0,
        higher_is_better=False,
        extra={
            "partitions": partitions,
            "second_half_per_partition": second_half / (span.seconds / 2) / partitions,
        },
    )


TIMER_SECONDS = (1.0, 5.0)
"""The shortest and longest timer of the timers scenario; the others are spread evenly between."""


async def timers(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(i) Timer lateness after idleness: ``sizes.timers`` orchestrations, each waiting one durable
    timer of 1-5 s, started together after ``sizes.timer_idle_seconds`` without work (the control
    queues' pollers backed off meanwhile, towards maxQueuePollingInterval).

    A timer's lateness is the start of the episode that took its TimerFired minus its fire_at, both
    from the history (read after the clock stopped); an early timer fails the run. The first timers
    fall due while the burst of starts is still being written, so the lateness of the timers due
    after every first episode ended is reported as well: that is the wake alone.
    """
    count = sizes.timers
    low, high = TIMER_SECONDS
    seconds = [round(low + (high - low) * i / max(count - 1, 1), 3) for i in range(count)]
    ids = [f"timer-{i:04d}" for i in range(count)]
    await asyncio.sleep(sizes.timer_idle_seconds)
    span = _Span(env)
    with span.measure():
        await asyncio.gather(
            *(env.client.start_new("timer", i, json.dumps(s)) for i, s in zip(ids, seconds, strict=True))
        )
        states = await env.wait_all(ids, sizes.timeout)
    for state, expected in zip(states, seconds, strict=True):
        check_output(env.hub_name, state, expected)
    facts = [await _timer_facts(env, instance_id) for instance_id in ids]
    late = [fact.late_ms for fact in facts]
    if min(late) < 0:
        raise BenchmarkError(f"hub {env.hub_name}: a timer fired {-min(late):.1f} ms early")
    burst_end = max(fact.first_episode_end for fact in facts)
    after_burst = [fact.late_ms for fact in facts if fact.fire_at > burst_end]
    first_start = min(fact.first_episode_start for fact in facts)
    p50 = percentile(late, 50)
    return span.result(
        p50,
        "ms",
        f"{count}x{low:g}-{high:g}s",
        count,
        p50_ms=p50,
        p99_ms=percentile(late, 99),
        higher_is_better=False,
        extra={
            "max_ms": max(late),
            "idle_before_s": sizes.timer_idle_seconds,
            "start_burst_s": (burst_end - first_start).total_seconds(),
            "after_burst_timers": len(after_burst),
            "after_burst_p99_ms": percentile(after_burst, 99) if after_burst else None,
        },
    )


@dataclass
class _TimerFacts:
    late_ms: float
    fire_at: datetime
    first_episode_start: datetime
    first_episode_end: datetime


async def _timer_facts(env: BenchEnv, instance_id: str) -> _TimerFacts:
    """When the one timer of ``instance_id`` was due and how late it fired; when its first episode
    (the start, which scheduled the timer) began and ended. All from its history."""
    episodes: list[datetime] = []
    first_end = None
    for event in (await env.client.hub.tracking.load_history(instance_id)).events:
        if isinstance(event, OrchestratorStartedEvent):
            episodes.append(event.timestamp)
        elif isinstance(event, OrchestratorCompletedEvent) and first_end is None:
            first_end = event.timestamp
        elif isinstance(event, TimerFiredEvent) and event.fire_at is not None and first_end is not None:
            late = (episodes[-1] - event.fire_at).total_seconds() * 1000
            return _TimerFacts(late, event.fire_at, episodes[0], first_end)
    raise BenchmarkError(f"hub {env.hub_name} instance {instance_id}: no TimerFired in its history")


DASHBOARD_SAMPLES = 20
"""Requests timed per dashboard route."""
DASHBOARD_LIST_PAGE = 50
"""Rows of the instance list's first page (the page's default page size)."""
DASHBOARD_HISTORY_PAGE = 500
"""History events the detail page shows before "Load more history" (static/js/detail.js)."""
_ROWS_IN_FLIGHT = 64


async def dashboard(env: BenchEnv, sizes: Sizes) -> Measurement:
    """Dashboard server time: the first page of ``sizes.dashboard_rows`` instances, and the history and
    timeline of an orchestration of ``sizes.dashboard_activities`` activities.

    The rows are written through the tracking store as starts write them (fast, no orchestration
    runs); the history comes from a real run. Requests go through httpx's ASGI transport to the real
    dashboard app, so each time is the server's work without a network. The dashboard reads through
    the engine's counted hub object: the requests figure is the dashboard's storage requests (plus
    the idle engine's polls). Then the same app is served over HTTP to Debian's chromium, which times
    the instance list and the detail page until they are drawn (benchmarks/browser.py).
    """
    await _insert_dashboard_rows(env, sizes.dashboard_rows)
    steps = sizes.dashboard_activities
    await env.run("sequential", steps, expected=steps, instance_id="dashboard-history", timeout=sizes.timeout)
    hub = DashboardHub.of(TaskHubClient(env.engine.hub))
    app = Starlette(routes=[dashboard_mount(DashboardOptions(HubSet([hub])))])
    base = f"http://bench/dashboard/api/hubs/{hub.id}"
    span = _Span(env)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=sizes.timeout) as http:
        with span.measure():
            first_page = [await _timed(http, f"{base}/instances") for _ in range(DASHBOARD_SAMPLES)]
            history = [await _history_ms(http, f"{base}/instances/dashboard-history/history")]
            timeline = [await _timed(http, f"{base}/instances/dashboard-history/timeline")]
            named = [await _timed(http, f"{base}/instances?name=nothing-by-this-name") for _ in range(3)]
            counts = [await _timed(http, f"{base}/counts") for _ in range(3)]
        events = await _history_length(http, f"{base}/instances/dashboard-history/history")
    browser = await _browser_figures(app, hub.id, events, sizes)
    p50 = percentile(first_page, 50)
    return span.result(
        p50,
        "ms",
        f"rows={sizes.dashboard_rows} history={steps}x4",
        DASHBOARD_SAMPLES,
        p50_ms=p50,
        p99_ms=percentile(first_page, 99),
        higher_is_better=False,
        extra={
            "history_ms": history[0],
            "timeline_ms": timeline[0],
            "history_and_timeline_ms": history[0] + timeline[0],
            "history_events": events,
            "name_filter_page_p50_ms": percentile(named, 50),
            "counts_p50_ms": percentile(counts, 50),
            **browser,
        },
    )


HOST_POLL = 0.01
"""Seconds between status reads while waiting, through HTTP as in-process (``BenchEnv.wait``'s default)."""


async def host(env: BenchEnv, sizes: Sizes) -> Measurement:
    """(k) The host path: the sequential and the fan-out workloads run by the in-process engine, then
    through ``python -m durable_ext start`` on the same Azurite (HTTP starter, status polling), then
    in-process again; the figure is the sequential rate through the host, with both ratios host /
    in-process (the mean of the runs before and after, so that a machine growing busier or quieter
    meanwhile does not tilt the ratio) and each engine's storage requests per activity (the host's from
    its ``/metrics``).
    """
    seq, fan = sizes.host_sequential, sizes.host_fanout
    workloads = {"sequential": (seq, seq), "fanout": (fan, fan * (fan + 1) // 2)}
    before = await _in_process_rates(env, workloads, "before", sizes.timeout)
    through_host, by_kind = await _host_rates(env, workloads, sizes.timeout)
    after = await _in_process_rates(env, workloads, "after", sizes.timeout)
    in_process = {name: (before[name][0] + after[name][0]) / 2 for name in workloads}
    requests = {
        "in_process": {name: (before[name][1] + after[name][1]) / 2 for name in workloads},
        "host": {name: sum(by_kind[name].values()) / count for name, (count, _) in workloads.items()},
    }
    return Measurement(
        figure=through_host["sequential"],
        unit="activities/s",
        size=f"{seq}+{fan}",
        steps=seq + fan,
        seconds=sum(count / through_host[name] for name, (count, _) in workloads.items()),
        requests=sum(sum(kinds.values()) for kinds in by_kind.values()),
        requests_by_kind={
            kind: sum(kinds.get(kind, 0) for kinds in by_kind.values())
            for kind in {kind for kinds in by_kind.values() for kind in kinds}
        },
        extra={
            "host_per_s": through_host,
            "in_process_per_s": in_process,
            "in_process_runs_per_s": {name: [before[name][0], after[name][0]] for name in workloads},
            "host_ratio": {name: through_host[name] / in_process[name] for name in workloads},
            "requests_per_activity": requests,
            "host_requests_by_kind": by_kind,
        },
    )


async def _history_length(http: httpx.AsyncClient, url: str) -> int:
    """How many events the whole history holds, read 1000 a page."""
    count = 0
    token: str | None = None
    while True:
        answer = (
            await http.get(url, params={"top": 1000, "continuation": token} if token else {"top": 1000})
        ).json()
        count += len(answer["events"])
        token = answer["continuation"]
        if token is None:
            return count


async def _browser_figures(app: Starlette, hub_id: str, events: int, sizes: Sizes) -> dict[str, Any]:
    """The dashboard's rendering times in chromium (benchmarks/browser.py); without a browser, why not
    (the report line says it)."""
    reason = browser_unavailable()
    if reason is not None:
        return {"browser_skipped": reason}
    target = RenderTarget(
        hub_id=hub_id,
        instance_id="dashboard-history",
        list_rows=min(DASHBOARD_LIST_PAGE, sizes.dashboard_rows),
        first_history_rows=min(DASHBOARD_HISTORY_PAGE, events),
        history_events=events,
        # One item per activity (the run is sequential); the fitted window shows them all.
        timeline_items=sizes.dashboard_activities,
    )
    return await render_times(app, target, sizes.timeout)


async def _insert_dashboard_rows(env: BenchEnv, count: int) -> None:
    """``count`` Instances rows of finished orchestrations, written as the client writes a start."""
    created = datetime(2026, 1, 1, tzinfo=UTC)
    statuses = [OrchestrationStatus.Completed, OrchestrationStatus.Running, OrchestrationStatus.Failed]
    rows = [
        InstanceState(
            instance_id=f"row-{index:06d}",
            execution_id=f"{index:032x}",
            name="sequential",
            input=str(index),
            custom_status=json.dumps({"step": index % 7}),
            runtime_status=statuses[index % len(statuses)],
            created_time=created + timedelta(seconds=index),
            last_updated_time=created + timedelta(seconds=index + 1),
        )
        for index in range(count)
    ]
    tracking = env.client.hub.tracking
    for first in range(0, count, _ROWS_IN_FLIGHT):
        written = await asyncio.gather(
            *(tracking.insert_instance(row) for row in rows[first : first + _ROWS_IN_FLIGHT])
        )
        if not all(written):
            raise BenchmarkError(f"hub {env.hub_name}: an Instances row already existed")


async def _timed(http: httpx.AsyncClient, url: str) -> float:
    """Milliseconds the dashboard took to answer ``url`` (which must succeed)."""
    started = time.perf_counter()
    response = await http.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise BenchmarkError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
    return elapsed


async def _history_ms(http: httpx.AsyncClient, url: str) -> float:
    """Milliseconds to read a whole history, 1000 events a page."""
    total = 0.0
    token: str | None = None
    while True:
        query = "?top=1000" + (f"&continuation={token}" if token else "")
        started = time.perf_counter()
        response = await http.get(url + query)
        total += (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise BenchmarkError(f"GET {url} answered {response.status_code}: {response.text[:200]}")
        token = response.json()["continuation"]
        if token is None:
            return total


async def _in_process_rates(
    env: BenchEnv, workloads: dict[str, tuple[int, int]], label: str, timeout: float
) -> dict[str, tuple[float, float]]:
    """Per workload, in-process: (activities/s, engine storage requests per activity)."""
    rates: dict[str, tuple[float, float]] = {}
    for name, (count, expected) in workloads.items():
        span = _Span(env)
        with span.measure():
            await env.run(name, count, expected=expected, instance_id=f"{label}-{name}", timeout=timeout)
        rates[name] = (count / span.seconds, span.requests / count)
    return rates


async def _host_rates(
    env: BenchEnv, workloads: dict[str, tuple[int, int]], timeout: float
) -> tuple[dict[str, float], dict[str, dict[str, int]]]:
    """Per workload through the host: activities/s, and the host engine's storage requests by kind."""
    rates: dict[str, float] = {}
    by_kind: dict[str, dict[str, int]] = {}
    async with running_host(env.connection_string) as base_url, aiohttp.ClientSession() as session:
        driver = HttpDriver(session, base_url)
        await driver.run("one_activity", None, expected=1, timeout=timeout, poll_interval=HOST_POLL)
        for name, (count, expected) in workloads.items():
            before = await driver.storage_requests()
            seconds = await driver.run(
                name, count, expected=expected, timeout=timeout, poll_interval=HOST_POLL
            )
            after = await driver.storage_requests()
            rates[name] = count / seconds
            by_kind[name] = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    return rates, by_kind


Scenario = Callable[[BenchEnv, Sizes], Awaitable[Measurement]]
SCENARIOS: dict[str, Scenario] = {
    "sequential": sequential,
    "longchain": longchain,
    "fanout100": fanout100,
    "fanout1000": fanout1000,
    "many": many,
    "events": events,
    "entities": entities,
    "latency": latency,
    "idle": idle,
    "timers": timers,
    "dashboard": dashboard,
    "scale10k": scale10k,
    "host": host,
}
"""The scenarios that run on the engine, in the default order."""


class PeakRss:
    """Peak resident set size of this process while the block runs, in MB.

    Resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) on entry and reads
    ``VmHWM`` from ``/proc/self/status`` on exit. Where the reset is not allowed it samples ``VmRSS``
    every 50 ms instead.
    """

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self.method = "VmHWM after reset"
        self._sampler: asyncio.Task[None] | None = None
        self._sampled_kb = 0

    async def __aenter__(self) -> PeakRss:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.method = "VmRSS sampled every 50 ms"
            self._sampler = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sampler is None:
            self.peak_mb = _status_kb("VmHWM") / 1024
            return
        self._sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sampler
        self.peak_mb = max(self._sampled_kb, _status_kb("VmRSS")) / 1024

    async def _sample(self) -> None:
        while True:
            self._sampled_kb = max(self._sampled_kb, _status_kb("VmRSS"))
            await asyncio.sleep(0.05)


def _status_kb(key: str) -> int:
    """A ``kB`` value from /proc/self/status (0 where there is no such file, e.g. not Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0
