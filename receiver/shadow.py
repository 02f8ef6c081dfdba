"""ShadowScorer: score a request again with the shadow version once its answer has been sent,
and compare. Run as the response's background task, so it can neither delay nor change the
answer; skipped (and counted) when the lane is busy, so primaries never queue behind it."""

from __future__ import annotations

import logging
import time

from receiver import rollout
from receiver.lane import ScoringLane
from receiver.metrics import Metrics
from receiver.registry import LoadedModel

logger = logging.getLogger(__name__)


class ShadowScorer:
    def __init__(self, lane: ScoringLane, metrics: Metrics) -> None:
        self._lane = lane
        self._metrics = metrics

    async def __call__(self, shadow: LoadedModel, body: bytes, mime: str,
                       primary_answer: bytes) -> None:
        labels = {"model": shadow.name, "version": shadow.version}
        if self._lane.busy():
            self._metrics.shadow_shed.labels(**labels).inc()
            return
        started = time.perf_counter()
        try:
            answer = await self._lane.score(shadow, body, mime)
        except Exception as exc:  # noqa: BLE001 - a failing shadow is counted, never raised
            self._metrics.prediction_errors.labels(**labels, role="shadow").inc()
            logger.warning("Shadow version %s of %s failed on a request the primary answered: "
                           "%s", shadow.version, shadow.name, type(exc).__name__)
            return
        self._metrics.prediction_latency.labels(role="shadow").observe(
            time.perf_counter() - started)
        self._metrics.predictions.labels(**labels, role="shadow").inc()
        self._metrics.shadow_comparisons.labels(**labels).inc()
        if not rollout.agree(primary_answer, answer):
            self._metrics.shadow_disagreements.labels(**labels).inc()
