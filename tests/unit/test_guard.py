"""The load boundary: whatever a model does while loading, the caller gets a value or a
ModelLoadFailed, within HOTSWAP_LOAD_TIMEOUT."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from examples.processes import wait_until
from receiver.guard import LoadGuard, LoadTimedOut
from receiver.metrics import Metrics
from receiver.registry import LoadedModel, ModelLoadFailed, ModelNotFound


def model(version: str) -> LoadedModel:
    return LoadedModel(name="m", version=version, pyfunc=None,  # type: ignore[arg-type]
                       input_schema=None, local_path=Path("/nonexistent"), run_id=None,
                       load_seconds=0.0)


class Loads:
    """A registry's load and release, scripted per version."""

    def __init__(self) -> None:
        self.behaviour: dict[str, BaseException | threading.Event] = {}
        self.started: list[str] = []
        self.released: list[str] = []

    def load(self, name: str, version: str) -> LoadedModel:
        self.started.append(version)
        what = self.behaviour.get(version)
        if isinstance(what, threading.Event):
            what.wait(timeout=30)
        elif what is not None:
            raise what
        return model(version)

    def release(self, loaded: LoadedModel) -> None:
        self.released.append(loaded.version)


def guard(loads: Loads, timeout: float = 5.0) -> tuple[LoadGuard, Metrics]:
    metrics = Metrics()
    return LoadGuard(loads, timeout, metrics), metrics  # type: ignore[arg-type]


def failures(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("hotswap_model_load_failures_total",
                                              {"reason": reason})
    return value or 0.0


def test_a_good_load_returns_its_model() -> None:
    loads = Loads()
    assert guard(loads)[0].load("m", "1").version == "1"


@pytest.mark.parametrize("exit_", [SystemExit(2), SystemExit("usage: model.py [-h]"),
                                   GeneratorExit()])
def test_sys_exit_in_a_load_becomes_a_load_failure(exit_: BaseException) -> None:
    loads = Loads()
    loads.behaviour["1"] = exit_
    g, metrics = guard(loads)
    with pytest.raises(ModelLoadFailed, match=type(exit_).__name__):
        g.load("m", "1")
    assert failures(metrics, "exit") == 1
    assert "version 1" in (g.last_failure or "")


def test_sys_exit_really_called_by_model_code() -> None:
    loads = Loads()
    g, _ = guard(loads)

    def argparse_style(name: str, version: str) -> LoadedModel:
        sys.exit(2)

    loads.load = argparse_style  # type: ignore[method-assign]
    with pytest.raises(ModelLoadFailed, match="SystemExit"):
        g.load("m", "1")


def test_errors_keep_their_type_and_are_counted() -> None:
    loads = Loads()
    loads.behaviour["1"] = RuntimeError("broken")
    loads.behaviour["2"] = ModelNotFound("no such version")
    g, metrics = guard(loads)
    with pytest.raises(RuntimeError, match="broken"):
        g.load("m", "1")
    with pytest.raises(ModelNotFound):
        g.load("m", "2")
    assert failures(metrics, "error") == 1  # a missing version is not the model's fault


def test_keyboard_interrupt_is_not_swallowed() -> None:
    loads = Loads()
    loads.behaviour["1"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        guard(loads)[0].load("m", "1")


def test_a_hung_load_is_abandoned_not_retried_while_it_runs_and_its_result_freed() -> None:
    loads = Loads()
    gate = loads.behaviour["1"] = threading.Event()
    g, metrics = guard(loads, timeout=0.2)
    with pytest.raises(LoadTimedOut, match="HOTSWAP_LOAD_TIMEOUT"):
        g.load("m", "1")
    assert g.abandoned() == ["m version 1"]
    # Another version loads meanwhile; the hung one is not started a second time.
    assert g.load("m", "2").version == "2"
    with pytest.raises(LoadTimedOut, match="still running"):
        g.load("m", "1")
    assert loads.started.count("1") == 1
    assert failures(metrics, "timeout") == 2
    # It finishes after all: nobody waits for it, so its files are freed, and it may load again.
    gate.set()
    wait_until(lambda: loads.released == ["1"], timeout=10, message="abandoned result freed")
    assert g.abandoned() == []
    del loads.behaviour["1"]
    assert g.load("m", "1").version == "1"
