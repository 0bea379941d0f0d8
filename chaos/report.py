"""The run's summary: one line per invariant, then the details of anything that failed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.stats import percentile
from chaos.drain import DrainRecord
from chaos.driver import RunResult
from chaos.recovery import KillRecovery, RecoverySummary

DETAIL_LINES = 10
"""Findings shown per failed invariant (the rest are counted)."""


def summary(result: RunResult) -> str:
    """The readable report of ``result``."""
    config = result.config
    outcome = result.outcome
    faults = (
        f"{len(result.drains)} drains ({sum(1 for d in result.drains if d.leases)} of a partition owner;"
        f" {config.drain_rounds} round(s) of rolling SIGTERM restarts)"
        if config.drains
        else f"{len(result.kills)} kills ({result.restarts} restarts), outage {_outage(result)}"
    )
    lines = [
        f"chaos: {result.expected_instances} instances ({config.instances} started, the rest"
        f" sub-orchestrations), {config.workers} workers, {faults}, seed {config.seed}",
        f"  duration          {result.seconds:.0f} s ({result.chaos_seconds:.0f} s of faults)",
        f"  lost              {len(outcome.lost)}",
        f"  stuck             {len(outcome.stuck)}",
        f"  wrong output      {len(outcome.wrong)}",
        f"  duplicated        {len(result.duplicated)} history event(s)",
        f"  entity mismatches {len(result.entity_mismatches)}",
        f"  leftover messages {len(result.leftovers)} queue(s)",
        f"  partition owners  {'ok' if not result.ownership else f'{len(result.ownership)} problem(s)'}",
        *(_drain_lines(result) if config.drains else _recovery_lines(result.recovery)),
        f"  worker tracebacks {result.tracebacks} (logged by workers; informational)",
    ]
    details = [
        ("lost", outcome.lost),
        ("stuck", outcome.stuck),
        ("wrong output", outcome.wrong),
        ("duplicated", result.duplicated),
        ("entity mismatches", result.entity_mismatches),
        ("leftover messages", result.leftovers),
        ("partition owners", result.ownership),
        ("recovery", [_kill_line(k) for k in result.recovery.violations()]),
        (
            "drains",
            [
                f"drain {d.number} (worker {d.worker}, pid {d.pid}): {p}"
                for d in result.drains
                for p in d.problems
            ],
        ),
        ("side effects", result.side_effects),
    ]
    for title, findings in details:
        lines += _details(title, findings)
    lines.append("FAILED" if result.failed else "PASSED")
    return "\n".join(lines)


def _outage(result: RunResult) -> str:
    if not result.outages:
        return "none"
    start, end = result.outages[0]
    return f"{(end - start).total_seconds():.0f} s"


def _recovery_lines(recovery: RecoverySummary) -> list[str]:
    if not recovery.samples:
        return ["  recovery          no kill with a measurable recovery"]
    bounds = sorted(k.kill.bound.total_seconds() for k in recovery.kills if k.seconds is not None)
    return [
        f"  recovery          {_figures(recovery.samples)} over {len(recovery.samples)} kills of a partition"
        f" owner (bound lease expiry + 10 s: {bounds[0]:.0f}-{bounds[-1]:.0f} s)",
        f"  without overlap   {_figures(recovery.clean_samples)} over {len(recovery.clean_samples)} kills"
        " with no other fault unresolved meanwhile",
        f"  over bound        {len(recovery.violations())} violation(s),"
        f" {len(recovery.confounded())} more with other faults unresolved meanwhile",
    ]


def _drain_lines(result: RunResult) -> list[str]:
    failed = [drain for drain in result.drains if drain.problems]
    return [
        f"  drains            {len(result.drains)}, {len(failed)} with problems (exit code, leases kept,"
        " partitions waiting a lease period)",
        f"  side effects      {len(result.side_effects)} ledger task(s) not run exactly once",
        f"  finished in drain {sum(d.finished_in_drain for d in result.drains)} ledger activities, run to"
        " completion by a draining worker (informational)",
    ]


def _drain_json(drain: DrainRecord) -> dict[str, Any]:
    return {
        "number": drain.number,
        "at": drain.at.isoformat(),
        "worker": drain.worker,
        "pid": drain.pid,
        "partitions": sorted(drain.leases),
        "exit_code": drain.exit_code,
        "finished_in_drain": drain.finished_in_drain,
        "replacement_pid": drain.replacement_pid,
        "problems": drain.problems,
    }


def _figures(samples: list[float]) -> str:
    if not samples:
        return "p50 -, max -"
    return f"p50 {percentile(samples, 50):.1f} s, max {max(samples):.1f} s"


def _kill_line(kill: KillRecovery) -> str:
    record = kill.kill
    seconds = f"{kill.seconds:.1f} s" if kill.seconds is not None else "never"
    return (
        f"kill {record.number} (worker {record.worker}, pid {record.pid}, {sorted(record.leases)}): recovered"
        f" in {seconds}, bound {record.bound.total_seconds():.0f} s; unrecovered {kill.unrecovered[:5]}"
    )


def _details(title: str, findings: Sequence[str]) -> list[str]:
    if not findings:
        return []
    lines = [f"{title}:"] + [f"  {finding}" for finding in findings[:DETAIL_LINES]]
    if len(findings) > DETAIL_LINES:
        lines.append(f"  ... and {len(findings) - DETAIL_LINES} more")
    return lines


def as_json(result: RunResult) -> dict[str, Any]:
    """The run's figures and findings, with one record per kill, for ``--json``."""
    outcome = result.outcome
    return {
        "seed": result.config.seed,
        "seconds": result.seconds,
        "instances": result.expected_instances,
        "restarts": result.restarts,
        "outages": [[start.isoformat(), end.isoformat()] for start, end in result.outages],
        "findings": {
            "lost": outcome.lost,
            "stuck": outcome.stuck,
            "wrong": outcome.wrong,
            "duplicated": result.duplicated,
            "entity_mismatches": result.entity_mismatches,
            "leftovers": result.leftovers,
            "ownership": result.ownership,
            "side_effects": result.side_effects,
            "drains": [problem for drain in result.drains for problem in drain.problems],
        },
        "drains": [_drain_json(drain) for drain in result.drains],
        "kills": [
            {
                "number": k.kill.number,
                "at": k.kill.at.isoformat(),
                "worker": k.kill.worker,
                "pid": k.kill.pid,
                "partitions": sorted(k.kill.leases),
                "bound_s": k.kill.bound.total_seconds(),
                "recovery_s": k.seconds,
                "active": k.active,
                "censored": k.censored,
                "confounded": k.confounded,
                "unrecovered": k.unrecovered,
            }
            for k in result.recovery.kills
        ],
        "failed": result.failed,
    }
