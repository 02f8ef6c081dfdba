"""The unit tests' stand-ins, one per thing faked: the registry, a loaded model, the clock.

`FakeRegistry` is a `receiver.registry.RegistryLike`, so the parts that take a registry accept
it as it is; `loaded_model` wraps any object with a `predict` as the receiver's `LoadedModel`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.types import Schema

from receiver.references import Reference
from receiver.registry import LoadedModel, ModelSnapshot

# What a load does before it answers: raise the exception, wait for the event (at most
# 30 s), or call the function (which may raise, or call sys.exit as model code can).
Behaviour = BaseException | threading.Event | Callable[[], object]


def loaded_model(version: str = "1", name: str = "m", pyfunc: Any = None,
                 input_schema: Schema | None = None) -> LoadedModel:
    """A loaded version around `pyfunc`: a PyFuncModel in production, here anything with the
    `predict` (and `metadata`) the code under test calls, or None where nothing predicts."""
    return LoadedModel(name=name, version=version, pyfunc=pyfunc, input_schema=input_schema,
                       local_path=Path("/nonexistent"), run_id=None, load_seconds=0.0)


class FakeRegistry:
    """Stands in for MLflow's registry.

    A snapshot says that the followed reference (`followed`: Production unless set) points to
    `pointer`, any other reference to `pointers[reference]`, and that the model's tags are
    `tags`. Snapshots are counted in `resolves`, and held while `gate` is cleared;
    `unreachable` makes them fail as MLflow being down does. A load records the version in
    `loads`, does what `behaviour[version]` says (nothing by default), then answers
    `loaded_model(version, pyfunc=pyfunc(version))`. Releases are recorded in `released`,
    `close` sets `closed`.
    """

    def __init__(self, pointer: str | None = "1",
                 pyfunc: Callable[[str], Any] = lambda version: None) -> None:
        self.followed = Reference("stage", "Production")
        self.pointer = pointer
        self.pointers: dict[Reference, str | None] = {}
        self.tags: dict[str, str] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.pyfunc = pyfunc
        self.unreachable = False
        self.resolves = 0
        self.loads: list[str] = []
        self.released: list[str] = []
        self.closed = False
        self.gate = threading.Event()
        self.gate.set()

    def snapshot(self, name: str) -> ModelSnapshot:
        self.resolves += 1
        self.gate.wait(timeout=10)
        if self.unreachable:
            raise ConnectionError("MLflow is down")
        pointing = {reference: version
                    for reference, version in {**self.pointers, self.followed: self.pointer}.items()
                    if version is not None}
        return ModelSnapshot(
            aliases={r.name: v for r, v in pointing.items() if r.kind == "alias"},
            stages={r.name.lower(): v for r, v in pointing.items() if r.kind == "stage"},
            tags=dict(self.tags))

    def load(self, name: str, version: str) -> LoadedModel:
        self.loads.append(version)
        what = self.behaviour.get(version)
        if isinstance(what, BaseException):
            raise what
        if isinstance(what, threading.Event):
            what.wait(timeout=30)
        elif what is not None:
            what()
        return loaded_model(version, name, pyfunc=self.pyfunc(version))

    def release(self, model: LoadedModel) -> None:
        self.released.append(model.version)

    def close(self) -> None:
        self.closed = True


class ManualClock:
    """Monotonic time that moves only when the test moves it: `clock.now += seconds`, or the
    code under test sleeping on it (`sleep=clock.sleep`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
