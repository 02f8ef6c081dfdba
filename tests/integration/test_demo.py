"""The README's first command, `./scripts/demo.sh`, run as a person runs it: version 2 pre-warmed
and shadowed in Staging, through the training gate, promoted and swapped in by the push from the
cache without a failed prediction, a rollback from the cache, and nothing left running
afterwards, also when it is stopped by Ctrl-C or SIGTERM half-way."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from examples.processes import group_pids, pid_running, port_open

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "scripts" / "demo.sh"


def demo_env(tmp_path: Path) -> dict[str, str]:
    # The demo's data folder is a fresh temporary directory: keep it inside this test's.
    return {**os.environ, "TMPDIR": str(tmp_path)}


def assert_nothing_left(summary: dict[str, Any]) -> None:
    assert set(summary["pids"]) == {"mlflow_server", "receiver"}
    for role, pids in summary["pids"].items():
        assert [pid for pid in pids if pid_running(pid)] == [], f"{role} still running"
        # Each server is a process-group leader: its group must be empty, workers included.
        assert group_pids(pids[0]) == [], f"{role}'s process group still has members"
    for role, port in summary["ports"].items():
        assert not port_open(port), f"{role} still listening on {port}"
    assert not Path(summary["data_dir"]).exists()


@pytest.mark.slow
def test_demo_prewarms_v2_swaps_it_in_by_the_push_and_rolls_back_from_the_cache(
        tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run([str(DEMO), "--summary-json", str(summary_path)], cwd=ROOT,
                            env=demo_env(tmp_path), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    summary = json.loads(summary_path.read_text())
    assert summary["ok"] and summary["error"] is None and summary["interrupted"] is None
    assert summary["versions_served"] == ["1", "2", "1"]
    swap, rollback, staging = summary["swap"], summary["rollback"], summary["staging"]
    # In Staging, version 2 was loaded ahead, scored live requests in the shadow (compared
    # with version 1's answers), and passed the gate.
    assert staging["version"] == "2" and staging["prewarmed_at"]
    assert staging["compared"] >= 50 and 0 <= staging["disagreed"] <= staging["compared"]
    assert staging["gate"] == "passed"
    # Pushed: the receiver says so in its log, polls only every 60 s, and the demo waits at
    # most 30 s for a swap. Pre-warmed: the promotion downloaded nothing.
    assert swap["version"] == "2" and swap["webhooks_accepted"] >= 1
    assert not swap["loaded"] and swap["cache_misses"] == 0 and swap["cache_hits"] >= 1
    assert swap["trigger"] == "webhook" and rollback["trigger"] == "webhook"
    assert 0 <= swap["latency_seconds"] < 30
    assert rollback["version"] == "1" and rollback["webhooks_accepted"] >= 1
    assert rollback["from_cache"] and rollback["cache_hits"] >= 1
    assert not rollback["loaded"] and rollback["cache_misses"] == 0
    predictions = summary["predictions"]
    assert predictions["failed"] == 0, predictions["errors"]
    assert predictions["by_version"].get("1", 0) > 0 and predictions["by_version"].get("2", 0) > 0
    assert_nothing_left(summary)

    # What a person reads: each step, the swap as it happened, and none of MLflow's chatter.
    for line in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "first answer from version 2",
                 "waiting for the receiver to pre-warm it... loaded and warmed up",
                 "disagreements (", "ok   roc_auc>=0.95", "not worse", "gate passed",
                 "swapped to version 2 (trigger: webhook), straight from the cache",
                 "hotswap_model_cache_hits_total 2", "version: 1", "0 failed predictions"):
        assert line in result.stdout, f"{line!r} not in the output:\n{output}"
    for chatter in ("View run", "Created version", "Registered model", "Warning"):
        assert chatter not in output, f"{chatter!r} in the output:\n{output}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_half_way_stops_everything(tmp_path: Path, sig: signal.Signals) -> None:
    summary_path = tmp_path / "summary.json"
    # A session of its own, so the signal goes to the demo's group as a terminal's Ctrl-C does.
    demo = subprocess.Popen([str(DEMO), "--summary-json", str(summary_path)], cwd=ROOT,
                            env=demo_env(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        # Both servers are started once the receiver's line shows (MLflow is up by then).
        deadline = time.monotonic() + 120
        while not any(line.startswith("  receiver: http") for line in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "the demo ended before starting its servers:\n" + "".join(seen)
            seen.append(line)
        os.killpg(demo.pid, sig)
        assert demo.wait(timeout=60) == 128 + sig.value
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    output = "".join(seen)

    summary = json.loads(summary_path.read_text())
    assert summary["interrupted"] == sig.name, output
    assert f"Interrupted ({sig.name})" in output
    assert_nothing_left(summary)
