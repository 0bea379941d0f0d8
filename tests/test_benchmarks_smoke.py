"""Smoke test of the benchmark suite: the quick sizes run end to end and report sensible numbers.

Never asserts on speed: the figures only have to exist and be positive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
SCENARIOS = ("sequential", "longchain", "latency", "timers", "dashboard")
HANG_LIMIT = 300
"""Seconds after which the run counts as hung (a guard, not a performance check)."""


def _run_quick(scenarios: tuple[str, ...], out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *scenarios, "--quick", *options, "--json", str(out)],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def test_quick_benchmarks_run_and_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _run_quick(SCENARIOS, out)

    lines = done.stdout.splitlines()
    for name in SCENARIOS:
        assert sum(line.startswith(name + " ") for line in lines) == 1, done.stdout

    document = json.loads(out.read_text())
    assert document["meta"]["quick"] is True
    for name in SCENARIOS:
        result = document["scenarios"][name]
        assert result["figure"] > 0, result
        assert result["probe"]["requests_per_s"] > 0, result
        assert result["round_trips_per_step"] > 0, result
        assert result["engine_requests"] > 0, result
    assert document["scenarios"]["longchain"]["long_vs_short"] > 0
    for name in ("latency", "timers", "dashboard"):
        result = document["scenarios"][name]
        assert 0 < result["p50_ms"] <= result["p99_ms"], result
    # The browser figures (chromium is required here, as by the browser tests).
    dashboard = document["scenarios"]["dashboard"]
    assert "browser_skipped" not in dashboard, dashboard
    for figure in ("instances", "detail"):
        assert 0 < dashboard[f"browser_{figure}_p50_ms"] <= dashboard[f"browser_{figure}_max_ms"], dashboard
    assert dashboard["browser_history_rest_ms"] >= 0, dashboard


def test_quick_scale_and_host_run_and_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # Neither scenario has a DBOS twin; host compares with the in-process engine instead.
    done = _run_quick(("scale10k", "host"), out, "--no-dbos")
    lines = done.stdout.splitlines()
    assert sum(line.startswith("scale10k ") for line in lines) == 1, done.stdout
    assert sum(line.startswith("host ") for line in lines) == 1, done.stdout

    scenarios = json.loads(out.read_text())["scenarios"]
    scale = scenarios["scale10k"]
    assert scale["size"] == "100x5", scale
    assert scale["figure"] > 0 and scale["reference_per_s"] > 0 and scale["vs_many"] > 0, scale
    assert scale["peak_rss_mb"] > 0 and scale["fanout_peak_rss_mb"] > 0, scale
    assert scale["fanout"] == 200 and scale["fanout_per_s"] > 0, scale
    host = scenarios["host"]
    for name in ("sequential", "fanout"):
        assert host["host_per_s"][name] > 0 and host["in_process_per_s"][name] > 0, host
        assert host["host_ratio"][name] > 0, host
        assert host["requests_per_activity"]["host"][name] > 0, host
