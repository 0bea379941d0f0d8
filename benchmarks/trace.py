"""``python -m benchmarks.trace [--runs N]``: where the time of one start → Completed run goes.

Runs the ``latency`` scenario's workload (a one-activity orchestration, the client polling its status
every 5 ms) on a fresh Azurite with the engine in-process, and records with ``perf_counter`` every
storage request (its kind, start and end, SDK or durable_ext's REST client alike) and the engine's
key steps: hand-overs, episodes, the replay, the checkpoint's steps, the activity, queue polls and
poll back-offs, the client's status reads. For each run it prints the timeline and then the
critical-path summary:

- **critical chain**: the storage requests the run waited for one after the other (from the final
  status read back, each time the request that ended last before the current one began, leaving
  out the client's earlier status reads): the sequential round trips of the run;
- **storage phases**: maximal groups of storage requests in flight together (background requests,
  e.g. message deletes, merge phases, so this undercounts on a busy run);
- **gaps**: stretches where no storage request is in flight, each with the step spans open meanwhile
  (a replay, a poll back-off, an event-loop hand-off...): time not spent waiting for storage.

The figures are deterministic in what they count (requests, phases) and noisy in what they time; the
run's storage probe (mean round trip) is printed beside them. Nothing here changes durable_ext: the
recording wraps its methods for the length of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import inspect
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core.pipeline.transport import AioHttpTransport

from benchmarks.harness import BenchEnv, configure_logging, load_bench_app
from benchmarks.scenarios import LATENCY_POLL
from durable_ext.client import TaskHubClient
from durable_ext.host.azurite import Azurite
from durable_ext.storage.queues import MessageQueue
from durable_ext.storage.requests import request_kind
from durable_ext.storage.rest import HttpSession
from durable_ext.worker.activities import ActivityDispatcher
from durable_ext.worker.backoff import BackoffPolling
from durable_ext.worker.checkpoint import Checkpointer
from durable_ext.worker.episode import EpisodePlanner
from durable_ext.worker.orchestrations import OrchestrationDispatcher

STORAGE = "storage"
STEP = "step"
PROBE_ITERATIONS = 50


@dataclass
class Span:
    """One recorded interval (an instant has ``end == start``)."""

    category: str
    label: str
    start: float
    end: float
    thread: str


class Recorder:
    """Collects spans while :attr:`active`; patches methods with :meth:`wrap`."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.active = False
        self._undo: list[Callable[[], None]] = []

    def add(self, category: str, label: str, start: float, end: float) -> None:
        """Record a span if recording."""
        if self.active:
            self.spans.append(Span(category, label, start, end, threading.current_thread().name))

    def wrap(
        self,
        owner: Any,
        name: str,
        label: Callable[..., str] | str,
        category: str = STEP,
    ) -> None:
        """Replace ``owner.name`` by a wrapper recording each call's span, labelled by ``label``
        (a string, or a function of the call's arguments)."""
        original = getattr(owner, name)
        describe = label if callable(label) else (lambda *_a, **_k: str(label))

        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.add(category, describe(*args, **kwargs), start, time.perf_counter())

            setattr(owner, name, wrapped_async)
        else:

            @functools.wraps(original)
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.add(category, describe(*args, **kwargs), start, time.perf_counter())

            setattr(owner, name, wrapped)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        """Put every wrapped method back."""
        while self._undo:
            self._undo.pop()()

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Span]]:
        """Record the spans of the ``with`` block into a fresh list."""
        self.spans = []
        self.active = True
        try:
            yield self.spans
        finally:
            self.active = False


def instrument(recorder: Recorder) -> None:
    """Wrap the storage clients and the engine's steps."""
    recorder.wrap(
        HttpSession, "request", lambda _self, method, url, *a, **k: request_kind(method, url), STORAGE
    )
    recorder.wrap(
        AioHttpTransport,
        "send",
        lambda _self, request, *a, **k: "sdk " + request_kind(request.method, request.url),
        STORAGE,
    )
    recorder.wrap(TaskHubClient, "start_new", "client start_new")
    recorder.wrap(TaskHubClient, "get_status", "client get_status")
    recorder.wrap(MessageQueue, "receive", lambda self, *a, **k: f"receive {_short(self.name)}")
    recorder.wrap(BackoffPolling, "wait", "back-off wait")
    recorder.wrap(OrchestrationDispatcher, "_dispatch", lambda _s, queue, msgs: f"dispatch {len(msgs)} msg")
    recorder.wrap(OrchestrationDispatcher, "deliver", "orchestration deliver (hand-off)")
    recorder.wrap(OrchestrationDispatcher, "take_result", "take_result (in-memory result)")
    recorder.wrap(OrchestrationDispatcher, "_episode", "episode")
    recorder.wrap(OrchestrationDispatcher, "_start_row", "episode: start row read")
    recorder.wrap(EpisodePlanner, "plan", "episode: replay + plan (thread)")
    recorder.wrap(Checkpointer, "commit", "checkpoint 1-2: messages + history")
    recorder.wrap(Checkpointer, "_write_status", "checkpoint 3: Instances")
    recorder.wrap(Checkpointer, "finish", "checkpoint 5: deletes")
    recorder.wrap(ActivityDispatcher, "deliver", "activity deliver (hand-off)")
    recorder.wrap(ActivityDispatcher, "_run", "activity work item")
    recorder.wrap(ActivityDispatcher, "_outcome", "activity call")


def _short(queue_name: str) -> str:
    return "workitems" if queue_name.endswith("workitems") else "control-" + queue_name.rsplit("-", 1)[1]


def phases(spans: list[Span], start: float, end: float) -> list[list[Span]]:
    """Storage requests within [start, end], grouped into maximal sets in flight together."""
    requests = sorted(
        (s for s in spans if s.category == STORAGE and s.end > start and s.start < end), key=lambda s: s.start
    )
    groups: list[list[Span]] = []
    reach = -1.0
    for request in requests:
        if groups and request.start < reach:
            groups[-1].append(request)
            reach = max(reach, request.end)
        else:
            groups.append([request])
            reach = request.end
    return groups


def gaps(groups: list[list[Span]], start: float, end: float) -> list[tuple[float, float]]:
    """The stretches of [start, end] with no storage request in flight."""
    found: list[tuple[float, float]] = []
    cursor = start
    for group in groups:
        first = min(s.start for s in group)
        if first > cursor:
            found.append((cursor, first))
        cursor = max(cursor, *(s.end for s in group))
    if end > cursor:
        found.append((cursor, end))
    return found


def critical_chain(spans: list[Span], start: float, end: float) -> list[Span]:
    """The storage requests the run waited for, one after the other: from the last request before
    ``end`` back to ``start``, each time the request that ended last before the current one began
    (what it was waiting for, as far as timing tells)."""
    reads = [s for s in spans if s.label == "client get_status"]
    # The client's earlier status reads found the instance still running: nothing waited for them.
    early = [r for r in reads if r.end < end]
    requests = [
        s
        for s in spans
        if s.category == STORAGE
        and s.start >= start
        and s.end <= end
        and not any(r.start <= s.start and s.end <= r.end for r in early)
    ]
    if not requests:
        return []
    chain = [max(requests, key=lambda s: s.end)]
    while True:
        before = [s for s in requests if s.end <= chain[-1].start]
        if not before:
            return chain[::-1]
        chain.append(max(before, key=lambda s: s.end))


@dataclass
class RunSummary:
    """What one run's trace adds up to."""

    total_ms: float
    storage_ms: float
    phases: int
    requests: int
    gap_ms: float
    chain: int


def report(spans: list[Span], verbose: bool) -> RunSummary:
    """Print one run's timeline (if ``verbose``) and critical path; returns its summary."""
    start = min(s.start for s in spans if s.label == "client start_new")
    end = max(s.end for s in spans if s.label == "client get_status")
    groups = phases(spans, start, end)
    holes = gaps(groups, start, end)
    if verbose:
        print("  timeline (ms from start_new; storage requests marked *):")
        for span in sorted(spans, key=lambda s: (s.start, s.end)):
            if span.start > end:
                continue
            mark = "*" if span.category == STORAGE else " "
            print(
                f"   {mark} {(span.start - start) * 1000:7.2f} {(span.end - start) * 1000:7.2f}"
                f" {(span.end - span.start) * 1000:6.2f}  {span.label}  [{span.thread}]"
            )
        print("  storage phases (requests in flight together, one after the other):")
        for index, group in enumerate(groups, 1):
            first, last = min(s.start for s in group), max(s.end for s in group)
            kinds = ", ".join(s.label for s in group)
            print(f"    {index:2d}. {(first - start) * 1000:7.2f}-{(last - start) * 1000:7.2f}  {kinds}")
        print("  gaps with no request in flight (≥ 0.3 ms) and the steps open or running then:")
        for low, high in holes:
            if high - low < 0.0003:
                continue
            busy = sorted({s.label for s in spans if s.category == STEP and s.start < high and s.end > low})
            print(
                f"    {(low - start) * 1000:7.2f}-{(high - start) * 1000:7.2f} "
                f"{(high - low) * 1000:6.2f} ms  {'; '.join(busy)}"
            )
    chain = critical_chain(spans, start, end)
    if verbose:
        print("  critical chain (each request began after the one before it ended):")
        for index, request in enumerate(chain, 1):
            print(
                f"    {index:2d}. {(request.start - start) * 1000:7.2f}-{(request.end - start) * 1000:7.2f}"
                f"  {request.label}"
            )
    total = (end - start) * 1000
    gap = sum(high - low for low, high in holes) * 1000
    requests = sum(len(g) for g in groups)
    return RunSummary(total, total - gap, len(groups), requests, gap, len(chain))


async def _traced(connection_string: str, runs: int, verbose: int, steps: int) -> None:
    registry = load_bench_app()
    recorder = Recorder()
    instrument(recorder)
    try:
        async with BenchEnv(connection_string, registry, PROBE_ITERATIONS) as env:
            assert env.probe is not None
            rtt = env.probe.round_trip_ms
            print(f"storage probe: mean round trip {rtt:.2f} ms")
            summaries: list[RunSummary] = []
            for i in range(runs):
                with recorder.recording() as spans:
                    await env.run(
                        "sequential" if steps else "one_activity",
                        steps or None,
                        expected=steps or 1,
                        instance_id=f"trace-{i:04d}",
                        timeout=60,
                        poll_interval=LATENCY_POLL,
                    )
                    await asyncio.sleep(0.05)  # the run's trailing clean-up, for the timeline
                show = i < verbose
                if show:
                    print(f"run {i}:")
                summary = report(spans, show)
                summaries.append(summary)
                print(
                    f"run {i}: {summary.total_ms:6.2f} ms = {summary.total_ms / rtt:5.1f} RTT; "
                    f"critical chain {summary.chain} requests; "
                    f"{summary.phases} storage phases ({summary.requests} requests), "
                    f"{summary.storage_ms:.2f} ms in storage, {summary.gap_ms:.2f} ms with none in flight"
                )
            _print_medians(summaries, rtt)
    finally:
        recorder.restore()


def _print_medians(summaries: list[RunSummary], rtt: float) -> None:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    total = median([s.total_ms for s in summaries])
    print(
        f"median of {len(summaries)} runs: {total:.2f} ms = {total / rtt:.1f} RTT; "
        f"critical chain {median([s.chain for s in summaries]):g} requests, "
        f"phases {median([s.phases for s in summaries]):g}, "
        f"requests {median([s.requests for s in summaries]):g}, "
        f"in storage {median([s.storage_ms for s in summaries]):.2f} ms, "
        f"no request in flight {median([s.gap_ms for s in summaries]):.2f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    """Trace ``--runs`` latency runs; print the first ``--show`` timelines in full."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.trace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs to trace (default 20)")
    parser.add_argument("--show", type=int, default=2, help="runs whose whole timeline is printed")
    parser.add_argument(
        "--steps", type=int, default=0, help="trace the sequential orchestration of this many activities"
    )
    args = parser.parse_args(argv)
    configure_logging()
    with Azurite() as azurite:
        asyncio.run(_traced(azurite.connection_string, args.runs, args.show, args.steps))


if __name__ == "__main__":
    main()
