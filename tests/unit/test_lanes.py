from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

import pytest

from examples.processes import wait_until
from mlflow_hotswap_plugin.lanes import Lanes

Step = Callable[[str, int], "float | None"]


def lanes(step: Step, workers: int = 4, queue_size: int = 100, idle: float = 60.0,
          name: str = "test-lanes") -> Lanes[str]:
    return Lanes(step, workers=workers, queue_size=queue_size, idle=idle, name=name)


def test_each_key_runs_its_jobs_in_order_one_at_a_time() -> None:
    done: dict[str, list[str]] = defaultdict(list)
    running: set[str] = set()
    overlap: list[str] = []
    lock = threading.Lock()

    def step(job: str, attempt: int) -> float | None:
        key = job.split(":")[0]
        with lock:
            if key in running:
                overlap.append(job)
            running.add(key)
        with lock:
            running.discard(key)
            done[key].append(job)
        return None

    pool = lanes(step)
    for index in range(50):
        for key in "abc":
            assert pool.put(key, f"{key}:{index}")
    assert pool.wait_idle(10)
    assert overlap == []
    for key in "abc":
        assert done[key] == [f"{key}:{index}" for index in range(50)]


def test_a_retrying_job_holds_its_key_and_no_worker() -> None:
    attempts: dict[str, int] = defaultdict(int)
    order: list[str] = []
    lock = threading.Lock()

    def step(job: str, attempt: int) -> float | None:
        with lock:
            attempts[job] += 1
            order.append(job)
        if job == "slow:1" and attempt < 3:
            return 0.05  # retried twice, then done
        return None

    pool = lanes(step, workers=1)  # one worker: the others run while slow:1 waits
    pool.put("slow", "slow:1")
    pool.put("slow", "slow:2")
    for index in range(5):
        pool.put(f"fast{index}", f"fast{index}:1")
    assert pool.wait_idle(10)
    assert attempts["slow:1"] == 3
    assert order.index("slow:2") > max(i for i, job in enumerate(order) if job == "slow:1")
    first_retry = [i for i, job in enumerate(order) if job == "slow:1"][1]
    assert all(order.index(f"fast{index}:1") < first_retry for index in range(5))


def test_a_blocked_key_delays_no_other_and_the_pool_stays_bounded() -> None:
    release = threading.Event()
    done: list[str] = []

    def step(job: str, attempt: int) -> float | None:
        if job.startswith("hung"):
            release.wait(30)
        done.append(job)
        return None

    pool = lanes(step, workers=4)
    try:
        for index in range(3):
            pool.put(f"hung{index}", f"hung{index}")
        for index in range(200):
            pool.put(f"key{index}", f"key{index}")
        wait_until(lambda: len(done) == 200, timeout=10, message="every other key done")
        assert pool.workers <= 4
        states = {state.key: state for state in pool.states()}
        assert set(states) == {"hung0", "hung1", "hung2"}
        assert all(state.in_flight and state.waiting == 0 for state in states.values())
    finally:
        release.set()
    assert pool.wait_idle(10)


def test_a_full_key_refuses_more_while_the_others_take_theirs() -> None:
    release = threading.Event()

    def step(job: str, attempt: int) -> float | None:
        release.wait(30)
        return None

    pool = lanes(step, queue_size=2)
    try:
        assert pool.put("a", "a1")
        wait_until(lambda: any(s.in_flight for s in pool.states()), timeout=5)
        assert pool.put("a", "a2") and pool.put("a", "a3")
        assert not pool.put("a", "a4")  # two wait behind the one in flight
        assert pool.put("b", "b1")
    finally:
        release.set()
    assert pool.wait_idle(10)


def test_a_job_that_raises_is_finished_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    done: list[str] = []

    def step(job: str, attempt: int) -> float | None:
        if job == "bad":
            raise RuntimeError("bug")
        done.append(job)
        return None

    pool = lanes(step, workers=1)
    pool.put("k", "bad")
    pool.put("k", "good")
    assert pool.wait_idle(10)
    assert done == ["good"]
    assert "a notification job for k failed" in caplog.text


def test_idle_workers_end_and_new_work_starts_them_again() -> None:
    done: list[str] = []

    def step(job: str, attempt: int) -> float | None:
        done.append(job)
        return None

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("idle-lanes")]

    pool = lanes(step, idle=0.05, name="idle-lanes")
    pool.put("a", "1")
    wait_until(lambda: pool.workers == 0 and done == ["1"] and not threads(), timeout=5)
    pool.put("a", "2")
    wait_until(lambda: done == ["1", "2"], timeout=5)


def test_retries_take_at_most_half_the_pool_so_new_work_keeps_flowing() -> None:
    lock = threading.Lock()
    retrying = [0, 0]  # now, most at once
    done: list[str] = []

    def step(job: str, attempt: int) -> float | None:
        if not job.startswith("hung"):
            done.append(job)
            return None
        with lock:
            retrying[0] += attempt > 1
            retrying[1] = max(retrying)
        threading.Event().wait(0.05)  # an attempt that times out
        with lock:
            retrying[0] -= attempt > 1
        return 0.0 if attempt < 8 else None

    pool = lanes(step, workers=4)
    for index in range(6):
        pool.put(f"hung{index}", f"hung{index}")
    wait_until(lambda: retrying[0] > 0, timeout=5, message="hung keys retrying")
    for index in range(100):
        pool.put(f"key{index}", f"key{index}")
    wait_until(lambda: len(done) == 100, timeout=10, message="new work done beside retries")
    assert pool.wait_idle(10)
    assert retrying[1] == 2
