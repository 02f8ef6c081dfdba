"""Staged rollout: reference syntax, its settings, who answers a request, and the shadow."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from receiver.codec import Codec, MlflowCodec
from receiver.metrics import Metrics
from receiver.references import Reference, Share, parse_reference, parse_references, parse_share
from receiver.registry import LoadedModel
from receiver.rollout import Contender, Router, agree, bucket
from receiver.scoring import JSON
from receiver.settings import Settings, SettingsError
from receiver.shadow import ShadowScorer
from tests.support.fakes import loaded_model

BASE = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MODEL_NAME": "fraud"}
CHALLENGER = Reference("alias", "challenger")
STAGING = Reference("stage", "Staging")


def model(version: str) -> LoadedModel:
    return loaded_model(version, name="fraud")


# -- syntax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Staging", STAGING), ("staging", STAGING), (" PRODUCTION ", Reference("stage", "Production")),
    ("@challenger", CHALLENGER), ("@blue-2_b", Reference("alias", "blue-2_b")),
])
def test_references_parse_as_mlflow_writes_them(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize("text", ["Stagin", "", "@", "@has space", "@latest", "@v3", "None"])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_reference(text)


def test_reference_lists_drop_duplicates_and_keep_order() -> None:
    assert parse_references("Staging, @challenger,staging,") == (STAGING, CHALLENGER)


@pytest.mark.parametrize("text, default, expected", [
    ("@challenger:10", 0.0, Share(CHALLENGER, 10.0)),
    ("Staging:0.5", 0.0, Share(STAGING, 0.5)),
    ("@challenger", 0.0, Share(CHALLENGER, None, 0.0)),  # the registry's tag says
    ("@challenger", 100.0, Share(CHALLENGER, None, 100.0)),
    ("@challenger:0", 100.0, Share(CHALLENGER, 0.0, 100.0)),
])
def test_shares(text: str, default: float, expected: Share) -> None:
    assert parse_share(text, default) == expected


@pytest.mark.parametrize("text", ["@challenger:101", "@challenger:-1", "@c:ten", "@c:nan",
                                  "@c:1_0", "@c:\u0663", "Stagin:10", "@challenger:"])
def test_bad_shares_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_share(text)


# -- settings ---------------------------------------------------------------------------------

def test_settings_read_the_rollout_variables() -> None:
    settings = Settings.from_env({**BASE, "MODEL_PREWARM": "Staging,@challenger",
                                  "MODEL_CANARY": "@challenger:20", "MODEL_SHADOW": "Staging"})
    assert settings.prewarm == (STAGING, CHALLENGER)
    assert settings.canary == Share(CHALLENGER, 20.0)
    assert settings.shadow == Share(STAGING, None, 100.0)  # the tag's, else 100
    assert settings.rollout_references == (STAGING, CHALLENGER)


def test_a_canary_without_a_percent_takes_the_registry_tag_else_nothing() -> None:
    settings = Settings.from_env({**BASE, "MODEL_CANARY": "@challenger"})
    assert settings.canary == Share(CHALLENGER, None, 0.0)
    assert str(settings.canary) == "@challenger"


def test_no_rollout_by_default() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.prewarm, settings.canary, settings.shadow) == ((), None, None)
    assert settings.rollout_references == ()


@pytest.mark.parametrize("env, variable", [
    ({"MODEL_PREWARM": "Staging,Stagin"}, "MODEL_PREWARM"),
    ({"MODEL_CANARY": "@challenger:150"}, "MODEL_CANARY"),
    ({"MODEL_SHADOW": "@challenger:x"}, "MODEL_SHADOW"),
    ({"MODEL_SHADOW": "Production"}, "MODEL_SHADOW"),  # the followed stage itself
    ({"MODEL_ALIAS": "champion", "MODEL_CANARY": "@champion:5"}, "MODEL_CANARY"),
    ({"MODEL_PREWARM": "Staging,@a,@b,@c,@d", "MODEL_CACHE_SIZE": "5"}, "MODEL_CACHE_SIZE"),
])
def test_a_bad_rollout_setting_fails_at_start_naming_the_variable(
        env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({**BASE, **env})


# -- who answers ------------------------------------------------------------------------------

def test_a_key_always_lands_in_the_same_bucket_and_keys_spread() -> None:
    assert bucket("user-7", "canary") == bucket("user-7", "canary")
    assert bucket("user-7", "canary") != bucket("user-7", "shadow")
    points = [bucket(f"user-{i}", "canary") for i in range(2000)]
    assert all(0 <= p < 100 for p in points)
    assert 400 < sum(p < 25 for p in points) < 600  # uniform enough for a 25 % share


def test_the_canary_takes_its_share_and_the_primary_the_rest() -> None:
    draws = iter([0.05, 0.19, 0.2, 0.5, 0.99])
    router = Router(draw=lambda: next(draws))
    roles = [router.route(model("1"), Contender(model("2"), 20.0), None, None).role
             for _ in range(5)]
    assert roles == ["canary", "canary", "primary", "primary", "primary"]


def test_the_same_key_gets_the_same_version() -> None:
    router, canary = Router(), Contender(model("2"), 50.0)
    for i in range(50):
        versions = {router.route(model("1"), canary, None, f"k{i}").model.version
                    for _ in range(5)}
        assert len(versions) == 1
    sides = Counter(router.route(model("1"), canary, None, f"k{i}").role for i in range(200))
    assert sides["canary"] > 50 and sides["primary"] > 50


@pytest.mark.parametrize("canary", [None, "1"])
def test_no_canary_when_absent_or_the_same_version(canary: str | None) -> None:
    route = Router().route(model("1"), Contender(model(canary) if canary else None, 100.0),
                           None, None)
    assert (route.model.version, route.role) == ("1", "primary")


def test_the_shadow_follows_primary_answers_only() -> None:
    router = Router(draw=lambda: 0.1)
    canary, shadow = Contender(model("2"), 50.0), Contender(model("3"), 100.0)
    assert router.route(model("1"), canary, shadow, None).shadow is None  # canary
    route = router.route(model("1"), Contender(None, 50.0), shadow, None)
    assert (route.role, route.model.version) == ("primary", "1")
    assert route.shadow is not None and route.shadow.version == "3"
    assert router.route(model("1"), None, Contender(model("1"), 100.0),
                        None).shadow is None  # same version
    assert router.route(model("1"), None, Contender(model("3"), 5.0),
                        None).shadow is None  # outside its share


def test_a_share_read_per_request_moves_the_split_at_once() -> None:
    router, canary = Router(draw=lambda: 0.5), model("2")
    assert router.route(model("1"), Contender(canary, 40.0), None, None).role == "primary"
    assert router.route(model("1"), Contender(canary, 60.0), None, None).role == "canary"
    assert router.route(model("1"), Contender(canary, 0.0), None, None).role == "primary"


def test_agreement_compares_predictions() -> None:
    assert agree(b'{"predictions": [0, 1]}', b'{"predictions": [0, 1]}')
    assert not agree(b'{"predictions": [0, 1]}', b'{"predictions": [1, 1]}')


def test_v2_answers_agree_on_their_outputs_whatever_version_made_them() -> None:
    def answer(version: str, data: list[int]) -> bytes:
        return json.dumps({"model_name": "m", "model_version": version, "outputs": [
            {"name": "predictions", "datatype": "INT64", "shape": [2], "data": data}]}).encode()

    assert agree(answer("1", [0, 1]), answer("3", [0, 1]))
    assert not agree(answer("1", [0, 1]), answer("3", [1, 1]))


# -- the shadow -------------------------------------------------------------------------------

class FakeLane:
    """Answers every body with `answer` (or raises it); busy while `busy` says so."""

    def __init__(self, answer: bytes | Exception, busy: bool = False) -> None:
        self.answer, self.is_busy = answer, busy
        self.calls: list[int] = []  # bodies per score_all call

    def busy(self) -> bool:
        return self.is_busy

    def score_all(self, model: LoadedModel, bodies: Sequence[tuple[bytes, Codec]],
                  ) -> list[bytes]:
        self.calls.append(len(bodies))
        if isinstance(self.answer, Exception):
            raise self.answer
        return [self.answer] * len(bodies)


def shadow_run(lane: FakeLane, primary: list[Any], shadows: int = 1,
               max_pending: int = 64, max_wait: float = 60) -> Metrics:
    """`shadows` requests handed over back to back (no await between them lets the drain
    start), then every one scored or shed."""
    metrics = Metrics()

    async def scenario() -> None:
        scorer = ShadowScorer(lane, anyio.CapacityLimiter(1), metrics,
                              max_pending, linger=0, max_wait=max_wait)
        answer, shadow = json.dumps({"predictions": primary}).encode(), model("3")
        for _ in range(shadows):
            await scorer(shadow, b"{}", MlflowCodec(JSON), answer)
        await scorer.join()
        assert scorer.pending() == 0

    asyncio.run(scenario())
    return metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model": "fraud", "version": "3", **labels})


def test_a_shadow_counts_agreement_and_disagreement() -> None:
    agreeing = shadow_run(FakeLane(b'{"predictions": [1]}'), [1])
    assert sample(agreeing, "hotswap_shadow_comparisons_total") == 1
    assert sample(agreeing, "hotswap_shadow_disagreements_total") in (None, 0)
    assert sample(agreeing, "hotswap_predictions_total", role="shadow",
                  protocol="mlflow") == 1
    disagreeing = shadow_run(FakeLane(b'{"predictions": [0]}'), [1])
    assert sample(disagreeing, "hotswap_shadow_disagreements_total") == 1


def test_shadows_handed_over_together_are_scored_in_one_call() -> None:
    lane = FakeLane(b'{"predictions": [1]}')
    metrics = shadow_run(lane, [1], shadows=5)
    assert lane.calls == [5]
    assert sample(metrics, "hotswap_shadow_comparisons_total") == 5
    assert metrics.registry.get_sample_value("hotswap_prediction_duration_seconds_count",
                                             {"role": "shadow"}) == 5


def test_shadows_beyond_the_pending_bound_are_shed() -> None:
    lane = FakeLane(b'{"predictions": [1]}')
    metrics = shadow_run(lane, [1], shadows=5, max_pending=2)
    assert lane.calls == [2]
    assert sample(metrics, "hotswap_shadow_comparisons_total") == 2
    assert sample(metrics, "hotswap_shadow_shed_total") == 3


def test_shadows_wait_while_the_lane_is_busy_and_run_once_it_is_not() -> None:
    lane = FakeLane(b'{"predictions": [1]}', busy=True)
    metrics = Metrics()

    async def scenario() -> None:
        scorer = ShadowScorer(lane, anyio.CapacityLimiter(1), metrics,
                              8, linger=0)
        await scorer(model("3"), b"{}", MlflowCodec(JSON), b'{"predictions": [1]}')
        for _ in range(20):  # drain rounds while the lane stays busy: nothing runs
            await asyncio.sleep(0)
        assert lane.calls == [] and scorer.pending() == 1
        lane.is_busy = False
        await scorer.join()

    asyncio.run(scenario())
    assert lane.calls == [1] and sample(metrics, "hotswap_shadow_comparisons_total") == 1


def test_a_busy_lane_sheds_the_shadow_and_a_failing_one_is_counted() -> None:
    lane = FakeLane(b'{"predictions": [1]}', busy=True)
    shed = shadow_run(lane, [1], max_wait=0)
    assert lane.calls == [] and sample(shed, "hotswap_shadow_shed_total") == 1
    assert sample(shed, "hotswap_shadow_comparisons_total") is None
    failed = shadow_run(FakeLane(RuntimeError("boom")), [1])
    assert sample(failed, "hotswap_prediction_errors_total", role="shadow",
                  protocol="mlflow") == 1
    assert sample(failed, "hotswap_shadow_comparisons_total") is None


def test_stop_drops_waiting_shadows_and_ends_the_drain() -> None:
    lane = FakeLane(b'{"predictions": [1]}', busy=True)

    async def scenario() -> ShadowScorer:
        scorer = ShadowScorer(lane, anyio.CapacityLimiter(1), Metrics(),
                              8, linger=0)
        await scorer(model("3"), b"{}", MlflowCodec(JSON), b'{"predictions": [1]}')
        await scorer.stop()
        await scorer.join()  # returns: no drain left
        await scorer(model("3"), b"{}", MlflowCodec(JSON), b'{"predictions": [1]}')
        return scorer

    assert asyncio.run(scenario()).pending() == 0 and lane.calls == []
