"""``python -m benchmarks [scenario ...] [--json out.json] [--quick] [--no-dbos]``.

Every scenario gets a fresh in-memory Azurite (Azurite slows down as its queues fill, so state from
one scenario must not slow the next), a raw storage probe of that Azurite, a new task hub and an
engine in this process. One line per scenario reports the figure, p50/p99 where they apply, the
storage ceiling comparison, the engine's measured storage requests per step and, when ``dbos`` is
installed, the same workload on DBOS Transact with SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchEnv, BenchmarkError, configure_logging, load_bench_app
from benchmarks.probe import ProbeResult
from benchmarks.scenarios import FULL, QUICK, SCENARIOS, Measurement, Sizes
from durable_ext.app_loader import FunctionRegistry
from durable_ext.host.azurite import AZURITE_VERSION, Azurite

REPO_DIR = Path(__file__).resolve().parent.parent
UNAVAILABLE: dict[str, str] = {}
"""Scenarios of issue 8 that cannot run yet, with the reason printed for them."""
ALL_SCENARIOS = [*SCENARIOS, "rss"]
"""Every scenario name, in the default order (``rss`` reuses ``many`` when that ran)."""
DBOS_SHAPES = {
    "sequential": ("sequential", "sequential"),
    "fanout100": ("fanout", "fanout100"),
    "fanout1000": ("fanout", "fanout1000"),
    "many": ("many", "many"),
    "events": ("events", "events"),
    "latency": ("latency", "latency"),
    "timers": ("timers", "timers"),
}
"""Scenario → (DBOS twin shape, Sizes field giving its size)."""


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, print one line each, optionally write JSON; 1 if any failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=f"any of {', '.join(ALL_SCENARIOS)}")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (for smoke tests)")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison")
    parser.add_argument(
        "--replay-every-episode",
        action="store_true",
        help='run the engine with "warmContinuation": false (every episode replays its history)',
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in ALL_SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(ALL_SCENARIOS)}")
    selected = list(dict.fromkeys(args.scenarios)) or ALL_SCENARIOS
    sizes = QUICK if args.quick else FULL
    dbos = not args.no_dbos and importlib.util.find_spec("dbos") is not None

    configure_logging()
    registry = load_bench_app()
    meta = machine_facts(quick=args.quick, dbos=dbos)
    meta["warm_continuation"] = not args.replay_every_episode
    print(
        f"durable_ext benchmarks {meta['date']} · {meta['cpus']} CPUs · {meta['memory']} · "
        f"Python {meta['python']} · Azurite {meta['azurite']} · df {meta['azure_functions_durable']}"
        f" · engine {meta['engine_source']} · {'quick' if args.quick else 'full'} sizes"
        f"{' · every episode replays' if args.replay_every_episode else ''}",
        flush=True,
    )
    if not dbos:
        reason = (
            "--no-dbos" if args.no_dbos else "dbos is not installed (pip install -r requirements-bench.txt)"
        )
        print(f"DBOS comparison skipped: {reason}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    failed = False
    for name in selected:
        if name in UNAVAILABLE:
            print(f"{name:<11} not available: {UNAVAILABLE[name]}", flush=True)
            results[name] = {"available": False, "reason": UNAVAILABLE[name]}
            continue
        if name == "rss" and "figure" in results.get("many", {}):
            results[name] = rss_result(results["many"])
            print(format_rss(results[name]), flush=True)
            continue
        scenario = "many" if name == "rss" else name
        try:
            measurement, env = run_scenario(scenario, registry, sizes, warm=not args.replay_every_episode)
        except BenchmarkError as exc:
            failed = True
            results[name] = {"failed": str(exc)}
            print(f"{name:<11} FAILED: {exc}", flush=True)
            continue
        result = scenario_result(measurement, env)
        if dbos and scenario in DBOS_SHAPES:
            result["dbos"] = run_dbos_twin(scenario, sizes)
            result["vs_dbos"] = dbos_ratio(result, result["dbos"])
        if name == "rss":
            result = rss_result(result)
            print(format_rss(result), flush=True)
        else:
            print(format_line(name, result), flush=True)
        for warning in result["engine_warnings"][:5]:
            print(f"{'':<11} engine log: {warning}", flush=True)
        results[name] = result

    if args.json is not None:
        document = {"meta": meta, "sizes": asdict(sizes), "scenarios": results}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if failed else 0


def run_scenario(
    name: str, registry: FunctionRegistry, sizes: Sizes, *, warm: bool = True
) -> tuple[Measurement, BenchEnv]:
    """Run one scenario on its own fresh Azurite, stopped again afterwards (``warm``: the engine's
    ``warmContinuation``)."""
    with Azurite() as azurite:
        return asyncio.run(_run_in_env(name, azurite.connection_string, registry, sizes, warm))


async def _run_in_env(
    name: str, connection_string: str, registry: FunctionRegistry, sizes: Sizes, warm: bool
) -> tuple[Measurement, BenchEnv]:
    env = BenchEnv(connection_string, registry, sizes.probe_iterations, warm=warm)
    async with env:
        measurement = await SCENARIOS[name](env, sizes)
    return measurement, env


def scenario_result(m: Measurement, env: BenchEnv) -> dict[str, Any]:
    """The JSON record of one measurement, with the storage-ceiling comparison."""
    probe = env.probe
    assert probe is not None
    result: dict[str, Any] = {
        "figure": m.figure,
        "unit": m.unit,
        "size": m.size,
        "seconds": m.seconds,
        "p50_ms": m.p50_ms,
        "p99_ms": m.p99_ms,
        "probe": probe.as_dict(),
        "round_trips_per_step": ceiling_ratio(m, probe),
        "engine_requests": m.requests,
        "engine_requests_per_step": m.requests / m.steps if m.steps else None,
        "engine_requests_per_s": m.requests / m.seconds if m.seconds else None,
        "engine_requests_by_kind": m.requests_by_kind,
        "engine_warnings": env.log_watch.records,
        **m.extra,
    }
    return result


def ceiling_ratio(m: Measurement, probe: ProbeResult) -> float | None:
    """Sequential storage round trips one step costs: ceiling rate / step rate (latency: p50 / RTT)."""
    if m.unit == "ms" and m.p50_ms is not None:
        return m.p50_ms / probe.round_trip_ms
    if m.higher_is_better and m.figure > 0:
        return probe.requests_per_s / m.figure
    return None


def run_dbos_twin(scenario: str, sizes: Sizes) -> dict[str, Any]:
    """Run the DBOS twin of ``scenario`` in a subprocess; its JSON, or ``{"error": ...}``."""
    shape, size_field = DBOS_SHAPES[scenario]
    size = getattr(sizes, size_field)
    command = [sys.executable, "-m", "benchmarks.dbos_twin", shape, str(size)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")])),
    }
    try:
        done = subprocess.run(
            command, cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=sizes.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {sizes.timeout:g} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit code {done.returncode}: {' / '.join(tail)}"}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def dbos_ratio(ours: dict[str, Any], dbos: dict[str, Any]) -> float | None:
    """How many times faster durable_ext is than DBOS (< 1: slower); latency compares p50s."""
    if "figure" not in dbos or not dbos["figure"] or not ours["figure"]:
        return None
    if ours["unit"] == "ms":
        return float(dbos["figure"]) / float(ours["figure"])
    return float(ours["figure"]) / float(dbos["figure"])


def rss_result(many: dict[str, Any]) -> dict[str, Any]:
    """The ``rss`` record: the peak RSS measured during ``many``."""
    return {
        "figure": many["peak_rss_mb"],
        "unit": "MB",
        "size": many["size"],
        "rss_method": many["rss_method"],
        "engine_warnings": many.get("engine_warnings", []),
    }


def format_rss(result: dict[str, Any]) -> str:
    """The report line of ``rss``."""
    return (
        f"{'rss':<11} {result['size']:<9} {result['figure']:8.1f} MB peak RSS of this process during many"
        f" ({result['rss_method']})"
    )


def format_line(name: str, r: dict[str, Any]) -> str:
    """The one-line report of a scenario."""
    if r["unit"] == "ms":
        figure = f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
    else:
        # Idle rates are fractions of a request per second: one decimal would hide the difference.
        figure = f"{r['figure']:8.2f} {r['unit']}" if r["figure"] < 1 else f"{r['figure']:8.1f} {r['unit']}"
        if r["p50_ms"] is not None:
            figure += f" (instance p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms)"
    probe = r["probe"]
    parts = [f"{name:<11} {r['size']:<9} {figure}"]
    ceiling = (
        f"ceiling {probe['requests_per_s']:.0f} req/s"
        f" (queue put+get+delete {probe['queue_cycles_per_s']:.0f}/s,"
        f" upsert {probe['table_upserts_per_s']:.0f}/s)"
    )
    if r["round_trips_per_step"] is not None:
        step = "p50" if r["unit"] == "ms" else "step"
        ceiling += f" → {r['round_trips_per_step']:.1f} round trips/{step} vs storage ceiling"
    parts.append(ceiling)
    if r["engine_requests_per_step"] is not None:
        parts.append(
            f"engine {r['engine_requests_per_step']:.1f} req/step ({r['engine_requests_per_s']:.0f} req/s)"
        )
    else:
        parts.append(f"engine {r['engine_requests']} req in {r['seconds']:.0f} s")
    parts += _details(r)
    if "dbos" in r:
        parts.append(format_dbos(r))
    return " | ".join(parts)


def _details(r: dict[str, Any]) -> list[str]:
    """The parts of a report line that only some scenarios have."""
    parts: list[str] = []
    if "python_cpu_pct" in r:
        parts.append(f"CPU python {r['python_cpu_pct']:.0f}% azurite {r['azurite_cpu_pct']:.0f}%")
    if r.get("start_pickup_p50_ms") is not None:
        parts.append(f"start message waited p50 {r['start_pickup_p50_ms']:.0f} ms in the control queue")
    if "long_vs_short" in r:
        parts.append(
            f"{r['long_vs_short']:.2f}x the rate of a {r['short_n']}-step chain ({r['short_per_s']:.1f}/s)"
        )
    if "raise_per_s" in r:
        parts.append(f"client raised {r['raise_per_s']:.0f} events/s")
    if "idle_before_s" in r:
        parts.append(f"started after {r['idle_before_s']:g} s idle, latest {r['max_ms']:.0f} ms late")
        if r["after_burst_p99_ms"] is not None:
            parts.append(
                f"the {r['after_burst_timers']} due after the {r['start_burst_s']:.1f} s burst of starts:"
                f" p99 {r['after_burst_p99_ms']:.1f} ms"
            )
    if "second_half_per_partition" in r:
        parts.append(f"second half {r['second_half_per_partition']:.2f} req/s/partition")
    if "peak_rss_mb" in r:
        parts.append(f"peak RSS {r['peak_rss_mb']:.0f} MB")
    parts += _browser_details(r)
    if "host_ratio" in r:
        parts.extend(
            f"{name} through the host {r['host_per_s'][name]:.1f}/s,"
            f" in-process {r['in_process_per_s'][name]:.1f}/s → {ratio:.2f}x"
            f" ({r['requests_per_activity']['host'][name]:.1f} vs"
            f" {r['requests_per_activity']['in_process'][name]:.1f} storage requests/activity)"
            for name, ratio in r["host_ratio"].items()
        )
    if "vs_many" in r:
        parts.append(
            f"{r['vs_many']:.2f}x the {r['reference_size']} run before it ({r['reference_per_s']:.1f}/s,"
            f" peak RSS {r['reference_peak_rss_mb']:.0f} MB)"
        )
        parts.append(
            f"fan-out of {r['fanout']}: {r['fanout_seconds']:.1f} s ({r['fanout_per_s']:.0f} activities/s),"
            f" peak RSS {r['fanout_peak_rss_mb']:.0f} MB"
        )
    return parts


def _browser_details(r: dict[str, Any]) -> list[str]:
    """The dashboard's browser figures (benchmarks/browser.py), or why there are none."""
    if "browser_skipped" in r:
        return [f"browser figures skipped: {r['browser_skipped']}"]
    if "browser_detail_p50_ms" not in r:
        return []
    return [
        f"chromium: instance list drawn p50 {r['browser_instances_p50_ms']:.0f} ms,"
        f" detail page (first history page + timeline) p50 {r['browser_detail_p50_ms']:.0f} ms"
        f" (max {r['browser_detail_max_ms']:.0f}), rest of the history {r['browser_history_rest_ms']:.0f} ms"
    ]


def format_dbos(r: dict[str, Any]) -> str:
    """The DBOS twin's part of a scenario's report line."""
    dbos = r["dbos"]
    if "error" in dbos:
        return f"DBOS failed: {dbos['error']}"
    if r["unit"] == "ms":
        return f"DBOS p50 {dbos['p50_ms']:.1f} ms p99 {dbos['p99_ms']:.1f} ms → {r['vs_dbos']:.2f}x DBOS"
    return f"DBOS {dbos['figure']:.1f} {dbos['unit']} → {r['vs_dbos']:.2f}x DBOS"


def machine_facts(*, quick: bool, dbos: bool) -> dict[str, Any]:
    """Date, machine and versions for the report."""
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory": _memory_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "azurite": AZURITE_VERSION,
        "azure_functions_durable": _version("azure-functions-durable"),
        "azure_storage_queue": _version("azure-storage-queue"),
        "azure_data_tables": _version("azure-data-tables"),
        "dbos": _version("dbos") if dbos else None,
        "engine_source": _engine_source(),
        "quick": quick,
    }


def _engine_source() -> str | None:
    """The commit the engine comes from, plus ``+ modified: ...`` for uncommitted durable_ext files."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "durable_ext"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return None
    modified = sorted(line[3:] for line in dirty if line.strip())
    return head + (f" + modified: {', '.join(modified)}" if modified else "")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


if __name__ == "__main__":
    sys.exit(main())
