"""CI size of the fault suite (issue 15 item 13): ``python -m chaos --quick`` must pass.

20 SIGKILLs of three ``start`` workers on one hub, 40 instances of every shape, a 10 s storage outage;
then nothing lost, stuck, duplicated or left in the queues, exact entities, one live owner per partition.
The drain scenario (issue 20), ``python -m chaos --drain --quick``, must pass too: each of the three
workers drained with SIGTERM and replaced in turn, every drain clean and every activity run once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
HANG_LIMIT = 290
"""Seconds after which the run counts as hung (the quick size takes about 2.5 minutes)."""


def passing_run(tmp_path: Path, *flags: str) -> dict[str, Any]:
    """Run ``python -m chaos --quick --seed 13 FLAGS``; fail unless it passed; its JSON report."""
    out = tmp_path / "chaos.json"
    done = subprocess.run(
        [sys.executable, "-m", "chaos", *flags, "--quick", "--seed", "13", "--json", str(out)],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=HANG_LIMIT,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert "PASSED" in done.stdout, done.stdout
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_quick_fault_suite_passes(tmp_path: Path) -> None:
    report = passing_run(tmp_path)
    assert len(report["kills"]) == 20, report
    assert report["restarts"] == 20, report
    assert len(report["outages"]) == 1, report
    assert not any(report["findings"].values()), report["findings"]


def test_quick_drain_scenario_passes(tmp_path: Path) -> None:
    report = passing_run(tmp_path, "--drain")
    drains = report["drains"]
    assert [drain["worker"] for drain in drains] == [0, 1, 2], report
    assert all(drain["exit_code"] == 0 and drain["replacement_pid"] for drain in drains), report
    assert any(drain["partitions"] for drain in drains), report
    assert report["kills"] == [] and report["restarts"] == 3, report
    assert not any(report["findings"].values()), report["findings"]
