"""ModelUpdater and the rollout references: pre-warmed versions share the cache and the refresh,
a promotion of one is a cache hit, and a broken challenger never touches the served model."""

from __future__ import annotations

from receiver.references import Reference, Share
from receiver.registry import LoadedModel
from receiver.updater import ModelUpdater
from tests.support.fakes import FakeRegistry
from tests.support.updater import make, run, running

STAGING = Reference("stage", "Staging")
CHALLENGER = Reference("alias", "challenger")


def held_version(updater: ModelUpdater, reference: Reference) -> str | None:
    held = updater.held("m", reference)
    return held.version if held else None


def test_a_prewarmed_version_is_loaded_ahead_and_its_promotion_is_a_cache_hit() -> None:
    registry = FakeRegistry()
    registry.pointers[STAGING] = "2"
    updater, metrics = make(registry, cache_size=3, prewarm=(STAGING,))

    async def scenario() -> None:
        async with running(updater):
            # never served at the default endpoint
            assert (served := updater.served("m")) is not None and served.version == "1"
            held = updater.held("m", STAGING)
            assert held is not None and held.version == "2"
            assert registry.loads == ["1", "2"]
            registry.pointer, registry.pointers[STAGING] = "2", None  # promoted
            await updater.trigger("webhook")
            assert updater.served("m") is held
            assert updater.held("m", STAGING) is None

    run(scenario())
    assert registry.loads == ["1", "2"]  # the promotion loaded nothing
    assert metrics.registry.get_sample_value("hotswap_model_cache_misses_total") == 2
    assert metrics.registry.get_sample_value("hotswap_model_cache_hits_total") == 1


def test_moving_the_alias_moves_what_is_held_and_a_broken_version_holds_nothing() -> None:
    registry = FakeRegistry()
    registry.pointers[CHALLENGER] = "2"
    updater, metrics = make(registry, cache_size=2, canary=Share(CHALLENGER, 10.0),
                            shadow=Share(CHALLENGER, 100.0))

    async def scenario() -> None:
        async with running(updater):
            assert held_version(updater, CHALLENGER) == "2"
            registry.pointers[CHALLENGER] = "3"
            await updater.trigger("webhook")
            assert held_version(updater, CHALLENGER) == "3"
            registry.pointers[CHALLENGER] = "4"
            registry.behaviour["4"] = RuntimeError("version 4 is broken")
            result = await updater.trigger("webhook")
            # The registry no longer points at 3, and 4 cannot load: nothing is held.
            assert updater.held("m", CHALLENGER) is None
            assert result.status == {"m": "unchanged"} and "m @challenger" in result.errors
            assert (served := updater.served("m")) is not None and served.version == "1"

    run(scenario())
    assert metrics.registry.get_sample_value("hotswap_model_update_errors_total") == 1
    assert "1" not in registry.released  # evicted by the challenger's loads, yet served


def test_a_held_version_evicted_from_the_cache_is_freed_only_once_let_go() -> None:
    registry = FakeRegistry()
    registry.pointers[STAGING] = "2"
    updater, _ = make(registry, cache_size=2, prewarm=(STAGING,))

    async def scenario() -> None:
        async with running(updater):
            held = updater.held("m", STAGING)
            await updater.pinned("m", "5")  # evicts 1, served: kept
            await updater.pinned("m", "6")  # evicts 2, held: kept
            assert registry.released == []
            registry.pointers[STAGING] = None
            await updater.trigger("manual")
            assert isinstance(held, LoadedModel) and registry.released == [held.version]

    run(scenario())
