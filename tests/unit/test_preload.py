"""Preload: the supervisor's load of each followed version before it forks its workers, over a
fake registry. A worker's side (it warms a preloaded version up, never downloads it) is in
test_registry.py; the two together, forked for real, in
tests/integration/test_receiver_workers.py."""

from __future__ import annotations

from receiver.preload import Preload
from receiver.registry import ModelSnapshot
from receiver.settings import Settings
from tests.support.fakes import FakeRegistry


def settings(*names: str) -> Settings:
    return Settings(tracking_uri="http://unused", model_names=names)


class PerModel(FakeRegistry):
    """Model `absent` has nothing at the followed stage; the others version 3."""

    def snapshot(self, name: str) -> ModelSnapshot:
        self.pointer = None if name == "absent" else "3"
        return super().snapshot(name)


def test_the_followed_version_of_each_model_is_loaded() -> None:
    registry = PerModel()
    preload = Preload(settings("a", "absent", "b"), registry)
    loaded = preload.load()
    assert [(model.name, model.version) for model in loaded] == [("a", "3"), ("b", "3")]
    assert preload.models == loaded


def test_a_registry_that_does_not_answer_leaves_nothing_preloaded_and_raises_nothing() -> None:
    registry = FakeRegistry()
    registry.unreachable = True
    assert Preload(settings("m"), registry).load() == ()


def test_a_version_that_fails_to_load_is_left_to_the_workers() -> None:
    registry = PerModel()
    registry.behaviour["3"] = RuntimeError("broken")
    assert Preload(settings("a", "b"), registry).load() == ()
    assert registry.loads == ["3", "3"]  # one model failing does not stop the next


def test_close_releases_what_was_preloaded_and_closes_the_registry() -> None:
    registry = FakeRegistry()
    preload = Preload(settings("m"), registry)
    preload.load()
    preload.close()
    assert registry.released == ["1"] and registry.closed

