"""Pinned versions: one spelling, a bound on loads at once, failures remembered for a while."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest

from receiver.errors import DOMAIN_ERRORS
from receiver.metrics import Metrics
from receiver.pinning import FAILED_TTL, PINNED_LOADS, PinnedLoadsBusy, PinnedModels
from receiver.pinning import canonical_version as canonical
from receiver.registry import ModelLoadFailed, ModelNotFound
from tests.support.fakes import ManualClock


class FakeModels:
    def __init__(self) -> None:
        self.loaded: set[tuple[str, str]] = set()
        self.loads: list[str] = []
        self.broken: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()

    def cached(self, name: str, version: str) -> Any:
        return version if (name, version) in self.loaded else None

    def get(self, name: str, version: str) -> Any:
        if (name, version) in self.loaded:
            return version
        self.loads.append(version)
        self.gate.wait(timeout=10)
        if version in self.broken:
            raise ModelLoadFailed(f"{name} version {version} failed to load")
        if version == "404":
            raise ModelNotFound(f"no version {version}")
        self.loaded.add((name, version))
        return version


def make() -> tuple[PinnedModels, FakeModels, Metrics, ManualClock]:
    models, metrics, clock = FakeModels(), Metrics(), ManualClock(100.0)
    pinned = PinnedModels(models, anyio.CapacityLimiter(4), metrics,
                          clock=clock)
    return pinned, models, metrics, clock


@pytest.mark.parametrize("version", ["1", "9", "10", "123456789"])
def test_canonical_versions(version: str) -> None:
    assert canonical(version)


@pytest.mark.parametrize("version", ["01", "001", "0", "", "+1", "-1", "1.0", " 1", "1 ",
                                     "\u0661", "\u00b2", "1_0", "1e3", "9" * 19])
def test_other_spellings_are_not_versions(version: str) -> None:
    assert not canonical(version)


def test_a_non_canonical_spelling_is_404_and_loads_nothing() -> None:
    pinned, updater, _, _ = make()
    for spelling in ("01", "001", "0001"):
        with pytest.raises(ModelNotFound, match="plain number"):
            asyncio.run(pinned.get("m", spelling))
    assert updater.loads == []
    assert DOMAIN_ERRORS[ModelNotFound][0] == 404


def test_a_failed_version_is_remembered_then_retried_after_the_ttl() -> None:
    pinned, updater, metrics, clock = make()
    updater.broken.add("3")

    async def twice() -> None:
        for _ in range(2):
            with pytest.raises(ModelLoadFailed):
                await pinned.get("m", "3")
        with pytest.raises(ModelNotFound):
            await pinned.get("m", "404")
        with pytest.raises(ModelNotFound):
            await pinned.get("m", "404")

    asyncio.run(twice())
    assert updater.loads == ["3", "404"]  # the second of each from the negative cache
    assert metrics.registry.get_sample_value("hotswap_pinned_requests_refused_total",
                                             {"reason": "failed_recently"}) == 2
    clock.now += FAILED_TTL + 1
    with pytest.raises(ModelLoadFailed):
        asyncio.run(pinned.get("m", "3"))
    assert updater.loads == ["3", "404", "3"]


def test_concurrent_loads_are_bounded_and_the_rest_get_503_at_once() -> None:
    pinned, updater, metrics, _ = make()
    updater.loaded.add(("m", "1"))

    async def burst() -> list[object]:
        updater.gate.clear()
        loading = [asyncio.create_task(pinned.get("m", str(v)))
                   for v in range(2, 2 + PINNED_LOADS)]
        await asyncio.sleep(0)  # let them take their tokens
        while len(updater.loads) < PINNED_LOADS:
            await asyncio.sleep(0.001)
        with pytest.raises(PinnedLoadsBusy):
            await pinned.get("m", "99")
        hit = await asyncio.wait_for(pinned.get("m", "1"), timeout=5)  # cached: no token needed
        updater.gate.set()
        return [hit, *await asyncio.gather(*loading)]

    assert asyncio.run(asyncio.wait_for(burst(), timeout=10)) == ["1", "2", "3"]
    assert "99" not in updater.loads
    assert metrics.registry.get_sample_value("hotswap_pinned_requests_refused_total",
                                             {"reason": "busy"}) == 1
    assert DOMAIN_ERRORS[PinnedLoadsBusy] == (503, "OVERLOADED")
