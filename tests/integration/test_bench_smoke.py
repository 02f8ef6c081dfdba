"""The benchmark's smoke mode runs every part against real servers, so bench/ cannot rot.

Timings never fail a test: this checks only that each part ran and produced figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_benchmark_part_runs_and_yields_figures(tmp_path: Path) -> None:
    results_path = tmp_path / "results.json"
    report_path = tmp_path / "REPORT.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-install", "--json", str(results_path),
         "--report", str(report_path), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"stdout:\n{done.stdout[-6000:]}\nstderr:\n{done.stderr[-6000:]}"

    results = json.loads(results_path.read_text())
    assert [part["number"] for part in results] == list(range(1, 14))
    for part in results:
        assert part["error"] is None, part
        assert part["figures"], f"part {part['number']} produced no figures"
        assert all(figure["value"] for figure in part["figures"]), part
    report = report_path.read_text()
    assert "`nproc`" in report and "## 6. Notification storm" in report
    assert "## 7. Fan-out to " in report  # smoke mode fans out to fewer replicas
    assert "## 9. Overload: goodput at 1,000 clients" in report
    assert "## 10. Progressive delivery" in report
    assert "## 11. Open Inference Protocol" in report
    assert "## 12. Throughput and p99 against clients" in report
    assert "## 13. Apache Beam" in report
    for chart in ("throughput.png", "p99.png"):  # drawn beside the report, linked from it
        assert f"]({chart})" in report
        assert (tmp_path / chart).read_bytes().startswith(b"\x89PNG")
    assert "## 13. Apache Beam" in report
