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


def test_quick_benchmarks_run_and_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *SCENARIOS, "--quick", "--json", str(out)],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"

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
