"""Models and the rollout references: pre-warmed versions share the cache and the refresh,
a promotion of one is a cache hit, and a broken challenger never touches the served model."""

from __future__ import annotations

import asyncio
import logging

import pytest

from receiver.models import Models
from receiver.references import Reference, Share
from receiver.registry import LoadedModel
from receiver.shares import CANARY_TAG, SHADOW_TAG, CurrentShare, Shares
from tests.support.fakes import FakeRegistry
from tests.support.updater import make, run, running

STAGING = Reference("stage", "Staging")
CHALLENGER = Reference("alias", "challenger")


def held_version(models: Models, reference: Reference) -> str | None:
    held = models.held("m", reference)
    return held.version if held else None


def test_a_prewarmed_version_is_loaded_ahead_and_its_promotion_is_a_cache_hit() -> None:
    registry = FakeRegistry()
    registry.pointers[STAGING] = "2"
    updater, models, metrics = make(registry, cache_size=3, prewarm=(STAGING,))

    async def scenario() -> None:
        async with running(updater):
            # never served at the default endpoint
            assert (served := models.served("m")) is not None and served.version == "1"
            held = models.held("m", STAGING)
            assert held is not None and held.version == "2"
            assert registry.loads == ["1", "2"]
            registry.pointer, registry.pointers[STAGING] = "2", None  # promoted
            await updater.trigger("webhook")
            assert models.served("m") is held
            assert models.held("m", STAGING) is None

    run(scenario())
    assert registry.loads == ["1", "2"]  # the promotion loaded nothing
    assert metrics.registry.get_sample_value("hotswap_model_cache_misses_total") == 2
    assert metrics.registry.get_sample_value("hotswap_model_cache_hits_total") == 1


def test_moving_the_alias_moves_what_is_held_and_a_broken_version_holds_nothing() -> None:
    registry = FakeRegistry()
    registry.pointers[CHALLENGER] = "2"
    updater, models, metrics = make(registry, cache_size=2, canary=Share(CHALLENGER, 10.0),
                            shadow=Share(CHALLENGER, 100.0))

    async def scenario() -> None:
        async with running(updater):
            assert held_version(models, CHALLENGER) == "2"
            registry.pointers[CHALLENGER] = "3"
            await updater.trigger("webhook")
            assert held_version(models, CHALLENGER) == "3"
            registry.pointers[CHALLENGER] = "4"
            registry.behaviour["4"] = RuntimeError("version 4 is broken")
            result = await updater.trigger("webhook")
            # The registry no longer points at 3, and 4 cannot load: nothing is held.
            assert models.held("m", CHALLENGER) is None
            assert result.status == {"m": "unchanged"} and "m @challenger" in result.errors
            assert (served := models.served("m")) is not None and served.version == "1"

    run(scenario())
    assert metrics.registry.get_sample_value("hotswap_model_update_errors_total") == 1
    assert "1" not in registry.released  # evicted by the challenger's loads, yet served


def test_a_held_version_evicted_from_the_cache_is_freed_only_once_let_go() -> None:
    registry = FakeRegistry()
    registry.pointers[STAGING] = "2"
    updater, models, _ = make(registry, cache_size=2, prewarm=(STAGING,))

    async def scenario() -> None:
        async with running(updater):
            held = models.held("m", STAGING)
            await asyncio.to_thread(models.get, "m", "5")  # evicts 1, served: kept
            await asyncio.to_thread(models.get, "m", "6")  # evicts 2, held: kept
            assert registry.released == []
            registry.pointers[STAGING] = None
            await updater.trigger("manual")
            assert isinstance(held, LoadedModel) and registry.released == [held.version]

    run(scenario())


def test_shares_without_a_percent_follow_the_registry_tags_one_call_per_refresh(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry()
    registry.pointers.update({CHALLENGER: "2", STAGING: "3"})
    updater, models, metrics = make(registry, cache_size=3, prewarm=(STAGING,),
                                    canary=Share(CHALLENGER, None, 0.0),
                                    shadow=Share(CHALLENGER, None, 100.0))

    def resolves() -> float:
        return metrics.registry.get_sample_value("hotswap_registry_resolves_total") or 0.0

    async def scenario() -> None:
        async with running(updater):
            # No tags yet: no canary traffic, the shadow on every request.
            assert models.shares("m") == Shares(CurrentShare(0.0, "registry"),
                                                CurrentShare(100.0, "registry"))
            registry.tags = {CANARY_TAG: "25", SHADOW_TAG: "12.5"}
            calls, counted = registry.resolves, resolves()
            await updater.trigger("webhook")
            assert models.shares("m") == Shares(CurrentShare(25.0, "registry"),
                                                CurrentShare(12.5, "registry"))
            # The followed stage, a pre-warmed stage, an alias and the tags: one call.
            assert (registry.resolves - calls, resolves() - counted) == (1, 1)
            registry.tags = {CANARY_TAG: "lots"}
            for _ in range(3):
                await updater.trigger("manual")
            assert models.shares("m") == Shares(CurrentShare(0.0, "registry"),
                                                CurrentShare(100.0, "registry"))

    with caplog.at_level(logging.WARNING, logger="receiver.shares"):
        run(scenario())
    assert [r.getMessage() for r in caplog.records].count(
        "Tag hotswap.canary_percent of m is 'lots', not a percentage from 0 to 100: taking 0 "
        "until it is mended") == 1


def test_a_share_written_in_the_setting_ignores_the_tag() -> None:
    registry = FakeRegistry()
    registry.pointers[CHALLENGER] = "2"
    registry.tags = {CANARY_TAG: "90"}
    updater, models, _ = make(registry, canary=Share(CHALLENGER, 20.0))

    async def scenario() -> None:
        async with running(updater):
            assert models.shares("m") == Shares(CurrentShare(20.0, "env"), None)

    run(scenario())


def test_when_the_registry_does_not_answer_the_rollout_stays_as_it_was() -> None:
    registry = FakeRegistry()
    registry.pointers[CHALLENGER] = "2"
    registry.tags = {CANARY_TAG: "30"}
    updater, models, _ = make(registry, canary=Share(CHALLENGER, None))

    async def scenario() -> None:
        async with running(updater):
            held, shares = models.held("m", CHALLENGER), models.shares("m")
            registry.unreachable = True
            result = await updater.trigger("poll")
            assert result.errors.keys() == {"m"} and "MLflow is down" in result.errors["m"]
            assert models.held("m", CHALLENGER) is held and models.shares("m") == shares
            assert shares.canary == CurrentShare(30.0, "registry")

    run(scenario())
