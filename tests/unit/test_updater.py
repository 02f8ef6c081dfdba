"""ModelUpdater and Models with a fake registry: swaps, coalescing, failures and retries."""

from __future__ import annotations

import asyncio
import functools
import gc

import pytest

from receiver.metrics import Metrics
from receiver.models import Models, RefreshStatus
from receiver.settings import Settings
from receiver.threads import Limiters
from receiver.updater import JITTER, QUIET, ModelUpdater
from tests.support.fakes import FakeRegistry, ManualClock
from tests.support.updater import make, run, running

RELOADED, UNCHANGED = RefreshStatus.RELOADED, RefreshStatus.UNCHANGED
FAILED, ABSENT = RefreshStatus.FAILED, RefreshStatus.ABSENT


def served_version(models: Models) -> str | None:
    model = models.served("m")
    return model.version if model else None


def test_startup_loads_then_a_trigger_swaps_and_counts() -> None:
    registry = FakeRegistry()
    updater, models, metrics = make(registry)

    async def scenario() -> None:
        async with running(updater):
            assert served_version(models) == "1"
            registry.pointer = "2"
            result = await updater.trigger("webhook")
            assert result.status == {"m": RELOADED}
            assert served_version(models) == "2"
            result = await updater.trigger("manual")
            assert result.status == {"m": UNCHANGED}

    run(scenario())
    assert metrics.registry.get_sample_value("hotswap_model_version", {"model": "m"}) == 2
    assert metrics.registry.get_sample_value(
        "hotswap_model_reloads_total", {"trigger": "webhook"}) == 1


def test_triggers_during_a_refresh_coalesce_into_one_more() -> None:
    registry = FakeRegistry()
    updater, _, _ = make(registry)

    async def scenario() -> None:
        async with running(updater):
            before = registry.resolves
            registry.gate.clear()  # the next refresh blocks inside its snapshot
            first = updater.trigger("webhook")
            while registry.resolves == before:  # the refresh has started and is blocked
                await asyncio.sleep(0.01)
            storm = [updater.trigger("webhook") for _ in range(1000)]
            assert all(f is storm[0] for f in storm) and storm[0] is not first
            registry.gate.set()
            await first
            await storm[0]
            assert registry.resolves - before == 2

    run(scenario())


def test_a_burst_of_notifications_is_settled_into_one_resolve() -> None:
    registry = FakeRegistry()
    clock = ManualClock()
    updater, _, _ = make(registry, clock)

    async def scenario() -> None:
        async with running(updater):
            before = registry.resolves
            futures = []
            for _ in range(100):  # a notification every 5 ms for half a second
                futures.append(updater.trigger("webhook"))
                clock.now += 0.005
                await asyncio.sleep(0)  # the updater runs between notifications
            clock.now += QUIET  # then the storm is over
            await asyncio.gather(*futures)
            assert registry.resolves - before == 1

    run(scenario())


def test_a_broken_version_keeps_the_current_model_and_is_retried() -> None:
    registry = FakeRegistry()
    updater, models, metrics = make(registry, retry_delays=(0.05, 0.05))

    async def scenario() -> None:
        async with running(updater):
            registry.pointer = "3"
            registry.behaviour["3"] = RuntimeError("version 3 is broken")
            result = await updater.trigger("webhook")
            assert result.status == {"m": FAILED} and "broken" in result.errors["m"]
            assert served_version(models) == "1"
            # The retry happens on its own, well before the 600 s poll.
            while registry.loads.count("3") < 2:
                await asyncio.sleep(0.01)
            registry.behaviour.clear()
            while served_version(models) != "3":
                await asyncio.sleep(0.01)

    run(scenario())
    assert (metrics.registry.get_sample_value("hotswap_model_update_errors_total") or 0) >= 2


def test_mlflow_unreachable_keeps_serving_and_reports_the_error() -> None:
    registry = FakeRegistry()
    updater, models, _ = make(registry)

    async def scenario() -> None:
        async with running(updater):
            registry.unreachable = True
            result = await updater.trigger("poll")
            assert result.status == {"m": FAILED}
            assert served_version(models) == "1"
            assert "MLflow is down" in (models.last_error or "")

    run(scenario())


def test_nothing_at_the_stage_keeps_the_current_model() -> None:
    registry = FakeRegistry()
    updater, models, _ = make(registry)

    async def scenario() -> None:
        async with running(updater):
            registry.pointer = None
            result = await updater.trigger("manual")
            assert result.status == {"m": ABSENT}
            assert served_version(models) == "1"

    run(scenario())


def test_rollback_is_a_cache_hit_and_evicted_versions_are_released() -> None:
    registry = FakeRegistry()
    updater, models, metrics = make(registry)

    async def scenario() -> None:
        async with running(updater):
            for version in ["1", "2", "1", "3"]:
                registry.pointer = version
                await updater.trigger("manual")
                assert served_version(models) == version

    run(scenario())
    assert registry.loads == ["1", "2", "3"]  # going back to 1 loaded nothing
    assert metrics.registry.get_sample_value("hotswap_model_cache_hits_total") == 1
    assert registry.released == ["2"]  # cache of 2: loading 3 evicted the least recent, 2


@pytest.mark.parametrize("failures, expected", [(1, 5.0), (2, 10.0), (3, 30.0), (4, 60.0),
                                                (9, 60.0)])
def test_retries_back_off_5_10_30_then_60_seconds(failures: int, expected: float) -> None:
    updater, _, _ = make(FakeRegistry())
    updater._consecutive_failures = failures
    assert updater._delay() == expected


def test_the_poll_interval_is_jittered_so_replicas_do_not_poll_in_step() -> None:
    delays = []
    settings = Settings(tracking_uri="http://unused", model_names=("m",), update_interval=60.0)
    models = Models(settings, FakeRegistry(), Metrics())
    for draw in (0.0, 0.5, 1.0):
        updater = ModelUpdater(settings, models, Limiters.create(1).model_work,
                               draw=functools.partial(float, draw))
        delays.append(updater._delay())
    assert delays == pytest.approx([60.0 * (1 - JITTER), 60.0, 60.0 * (1 + JITTER)])
    spread = {make(FakeRegistry(), update_interval=60.0)[0]._delay() for _ in range(20)}
    assert len(spread) > 1 and all(d is not None and 54.0 <= d <= 66.0 for d in spread)


def test_what_a_load_brings_is_frozen_out_of_the_cyclic_collector() -> None:
    # A full collection walks every tracked object holding the GIL; what is loaded lives on,
    # so the updater freezes it (the throughput bench shows the tail latency this removes).
    registry = FakeRegistry()
    updater, models, _ = make(registry)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0

    async def scenario() -> None:
        async with running(updater):
            assert served_version(models) == "1"

    run(scenario())
    assert gc.get_freeze_count() > 0


def test_a_worker_updater_never_polls_and_tells_its_listeners_of_every_refresh() -> None:
    registry = FakeRegistry()
    settings = Settings(tracking_uri="http://unused", model_names=("m",), update_interval=0.01)
    models = Models(settings, registry, Metrics())
    updater = ModelUpdater(settings, models, Limiters.create(1).model_work, polls=False)
    heard: list[dict[str, RefreshStatus]] = []
    updater.on_refresh(lambda result: heard.append(result.status))

    async def scenario() -> None:
        async with running(updater):
            resolves = registry.resolves
            # Many poll intervals pass with no refresh: the supervisor times the host's poll.
            await asyncio.sleep(0.2)
            assert registry.resolves == resolves
            assert updater.next_attempt_at is None
            registry.pointer = "2"
            await updater.trigger("poll")

    run(scenario())
    assert heard[-1] == {"m": RELOADED}
    assert len(heard) == registry.resolves
