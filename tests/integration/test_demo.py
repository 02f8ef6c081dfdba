"""The README's first command, `./scripts/demo.sh`, run as a person runs it: version 2 pre-warmed
and shadowed in Staging, through the training gate, promoted and swapped in by the push from the
cache, a rollback from the cache, then `mlflow-hotswap rollout` across three receivers promoting
version 3 and rolling back version 4 (which fails on some transactions), all without a failed
prediction, and nothing left running afterwards, also when it is stopped by Ctrl-C or SIGTERM
half-way."""

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


SERVERS = {"mlflow_server", "receiver_1", "receiver_2", "receiver_3"}
# Every server is started once the receivers' line shows (MLflow is up by then); the rollout
# command once its first line shows.
SERVERS_STARTED = "  receivers: http"
ROLLOUT_STARTED = "step 1/3 20 %: share set"


def assert_nothing_left(summary: dict[str, Any], roles: set[str]) -> None:
    assert set(summary["pids"]) == roles
    assert set(summary["ports"]) == SERVERS
    for role, pids in summary["pids"].items():
        assert [pid for pid in pids if pid_running(pid)] == [], f"{role} still running"
        # Each process is a process-group leader: its group must be empty, workers included.
        assert group_pids(pids[0]) == [], f"{role}'s process group still has members"
    for role, port in summary["ports"].items():
        host = summary["hosts"][role]
        assert not port_open(port, host), f"{role} still listening on {host}:{port}"
    assert not Path(summary["data_dir"]).exists()


@pytest.mark.slow
def test_demo_swaps_v2_in_and_out_from_the_cache_then_rolls_v3_out_and_v4_back(
        tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result = subprocess.run([str(DEMO), "--summary-json", str(summary_path)], cwd=ROOT,
                            env=demo_env(tmp_path), stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    summary = json.loads(summary_path.read_text())
    assert summary["ok"] and summary["error"] is None and summary["interrupted"] is None
    assert summary["versions_served"] == ["1", "2", "1", "3"]
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
    # The rollouts, as `mlflow-hotswap rollout` exited and as it left the registry: version 3
    # promoted through every step, version 4 stopped at its first, the share back to 0 and
    # Production untouched; every request version 4 failed on was answered by version 3.
    good, bad = summary["rollouts"]
    assert good["version"] == "3" and good["exit_code"] == 0
    assert good["record"].startswith("promoted after steps 20,50,100 %"), good
    assert good["production"] == "3" and good["canary_percent"] == "0"
    assert good["served"] == dict.fromkeys(good["served"], "3") and len(good["served"]) == 3
    assert bad["version"] == "4" and bad["exit_code"] == 1
    assert bad["record"].startswith("aborted at 20 %: error rate"), bad
    assert bad["production"] == "3" and bad["canary_percent"] == "0"
    assert bad["fallbacks"] >= 1
    served = summary["served_at_end"]
    assert sorted(served) == sorted(good["served"]) and set(served.values()) == {"3"}
    predictions = summary["predictions"]
    assert predictions["failed"] == 0, predictions["errors"]
    for version in ("1", "2", "3"):
        assert predictions["by_version"].get(version, 0) > 0, predictions["by_version"]
    assert_nothing_left(summary, SERVERS | {"rollout_v3", "rollout_v4"})
    assert list(summary["step_seconds"]) == [str(step) for step in range(1, 8)]

    # What a person reads: each step, the swap as it happened, the rollouts line by line
    # between status tables, and none of MLflow's chatter.
    for line in ("[1/7]", "[2/7]", "[3/7]", "[4/7]", "[5/7]", "[6/7]", "[7/7]",
                 "first answer from version 2",
                 "waiting for the receivers to pre-warm it... loaded and warmed up by all 3",
                 "disagreements (", "ok   roc_auc>=0.95", "not worse", "gate passed",
                 "swapped to version 2 (trigger: webhook), straight from the cache",
                 "hotswap_model_cache_hits_total 2", "version: 1",
                 "$ mlflow-hotswap status", "ADDRESS", "$ mlflow-hotswap rollout",
                 "step 1/3 20 %: every replica took it", "step 3/3 100 %",
                 "promoted: Production -> version 3", "exit 0 (promoted)",
                 "rolled back: aborted at 20 %: error rate", "exit 1 (rolled back)",
                 "0 failed predictions", "Time per step: [1] "):
        assert line in result.stdout, f"{line!r} not in the output:\n{output}"
    for chatter in ("View run", "Created version", "Registered model", "Warning"):
        assert chatter not in output, f"{chatter!r} in the output:\n{output}"


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "after", "roles"), [
    (signal.SIGTERM, SERVERS_STARTED, SERVERS),
    (signal.SIGINT, ROLLOUT_STARTED, SERVERS | {"rollout_v3"})],
    ids=["sigterm-while-starting", "ctrl-c-during-the-rollout"])
def test_a_signal_half_way_stops_everything(tmp_path: Path, sig: signal.Signals, after: str,
                                            roles: set[str]) -> None:
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
        deadline = time.monotonic() + 120
        while not any(after in line for line in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the demo ended before {after!r}:\n" + "".join(seen)
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
    assert_nothing_left(summary, roles)
