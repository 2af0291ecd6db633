"""`rl-worker monitor` against a running worker: the table, the growth figures, the PNG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import produce, run
from tests.integration.test_decisions import build_positions

pytestmark = pytest.mark.integration


def test_monitor_reports_growth_and_plots(stack_factory: Any, tmp_path: Path) -> None:
    stack = stack_factory()
    worker = stack.start_worker()
    worker.wait_ready()
    records, _ = build_positions(stack, 25, seed=13, duplicate_share=0.0)
    run(produce(stack.bootstrap, records))
    health = worker.wait_model_version(25)
    png = tmp_path / "monitor.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RL_")} | {"COLUMNS": "250"}
    done = subprocess.run(
        [sys.executable, "-m", "rl_worker", "monitor", "--url", f"http://127.0.0.1:{worker.port}",
         "--samples", "2", "--interval", "0.2", "--png", str(png)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [[c.strip() for c in line.split("│")]
            for line in done.stdout.splitlines() if f"127.0.0.1:{worker.port}" in line and "│" in line]
    health_rows = [cells for cells in rows if cells[2] in {"ok", "starting", "degraded", "stalled"}]
    arm_rows = [cells for cells in rows if cells[2] in {"rl", "control"}]  # the per-arm trading table
    cells = health_rows[-1]
    assert cells[2] == "ok" and cells[3] == "25"
    assert arm_rows and arm_rows[-1][2] == "rl" and arm_rows[-1][3] == "25"
    assert cells[6] == str(health["q_states"]["meta"]) and cells[7] == str(health["q_states"]["sizing"])
    assert png.read_bytes()[:4] == b"\x89PNG"
