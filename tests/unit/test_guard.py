"""The load boundary: whatever a model does while loading, the caller gets a value or a
ModelLoadFailed, within HOTSWAP_LOAD_TIMEOUT."""

from __future__ import annotations

import sys
import threading

import pytest

from examples.processes import wait_until
from receiver.guard import LoadGuard, LoadTimedOut
from receiver.metrics import Metrics
from receiver.registry import ModelLoadFailed, ModelNotFound
from tests.support.fakes import FakeRegistry


def guard(registry: FakeRegistry, timeout: float = 5.0) -> tuple[LoadGuard, Metrics]:
    metrics = Metrics()
    return LoadGuard(registry, timeout, metrics), metrics


def failures(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("hotswap_model_load_failures_total",
                                              {"reason": reason})
    return value or 0.0


def test_a_good_load_returns_its_model() -> None:
    registry = FakeRegistry()
    assert guard(registry)[0].load("m", "1").version == "1"


@pytest.mark.parametrize("exit_", [SystemExit(2), SystemExit("usage: model.py [-h]"),
                                   GeneratorExit()])
def test_sys_exit_in_a_load_becomes_a_load_failure(exit_: BaseException) -> None:
    registry = FakeRegistry()
    registry.behaviour["1"] = exit_
    g, metrics = guard(registry)
    with pytest.raises(ModelLoadFailed, match=type(exit_).__name__):
        g.load("m", "1")
    assert failures(metrics, "exit") == 1
    assert "version 1" in (g.last_failure or "")


def test_sys_exit_really_called_by_model_code() -> None:
    registry = FakeRegistry()
    g, _ = guard(registry)

    def argparse_style() -> None:
        sys.exit(2)

    registry.behaviour["1"] = argparse_style
    with pytest.raises(ModelLoadFailed, match="SystemExit"):
        g.load("m", "1")


def test_errors_keep_their_type_and_are_counted() -> None:
    registry = FakeRegistry()
    registry.behaviour["1"] = RuntimeError("broken")
    registry.behaviour["2"] = ModelNotFound("no such version")
    g, metrics = guard(registry)
    with pytest.raises(RuntimeError, match="broken"):
        g.load("m", "1")
    with pytest.raises(ModelNotFound):
        g.load("m", "2")
    assert failures(metrics, "error") == 1  # a missing version is not the model's fault


def test_keyboard_interrupt_is_not_swallowed() -> None:
    registry = FakeRegistry()
    registry.behaviour["1"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        guard(registry)[0].load("m", "1")


def test_a_hung_load_is_abandoned_not_retried_while_it_runs_and_its_result_freed() -> None:
    registry = FakeRegistry()
    gate = registry.behaviour["1"] = threading.Event()
    g, metrics = guard(registry, timeout=0.2)
    with pytest.raises(LoadTimedOut, match="HOTSWAP_LOAD_TIMEOUT"):
        g.load("m", "1")
    assert g.abandoned() == ["m version 1"]
    # Another version loads meanwhile; the hung one is not started a second time.
    assert g.load("m", "2").version == "2"
    with pytest.raises(LoadTimedOut, match="still running"):
        g.load("m", "1")
    assert registry.loads.count("1") == 1
    assert failures(metrics, "timeout") == 2
    # It finishes after all: nobody waits for it, so its files are freed, and it may load again.
    gate.set()
    wait_until(lambda: registry.released == ["1"], timeout=10, message="abandoned result freed")
    assert g.abandoned() == []
    del registry.behaviour["1"]
    assert g.load("m", "1").version == "1"
