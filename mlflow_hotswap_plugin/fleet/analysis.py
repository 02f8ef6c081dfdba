"""A step's figures, canary against primary, from the counter increases of that step; and the
verdict against the limits. Pure: numbers in, numbers and words out."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlflow_hotswap_plugin.fleet.exposition import Samples

PREDICTIONS = "hotswap_predictions_total"
ERRORS = "hotswap_prediction_errors_total"
FALLBACKS = "hotswap_canary_fallbacks_total"
LATENCY_BUCKETS = "hotswap_prediction_duration_seconds_bucket"
COMPARISONS = "hotswap_shadow_comparisons_total"
DISAGREEMENTS = "hotswap_shadow_disagreements_total"
START_TIME = "hotswap_start_time_seconds"  # tells a restarted replica (deltas.py)
METRICS = (PREDICTIONS, ERRORS, FALLBACKS, LATENCY_BUCKETS, COMPARISONS, DISAGREEMENTS,
           START_TIME)


@dataclass(frozen=True)
class Limits:
    max_error_rate: float = 0.01
    max_latency_ratio: float = 1.5
    min_agreement: float = 0.95
    min_requests: int = 100


@dataclass(frozen=True)
class Figures:
    """One step, summed over the fleet. Requests count answers and errors alike."""

    canary_requests: float = 0.0
    canary_errors: float = 0.0
    primary_requests: float = 0.0
    primary_errors: float = 0.0
    canary_p99: float | None = None
    primary_p99: float | None = None
    comparisons: float = 0.0
    disagreements: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.canary_errors / self.canary_requests if self.canary_requests else 0.0

    @property
    def primary_error_rate(self) -> float:
        return self.primary_errors / self.primary_requests if self.primary_requests else 0.0

    @property
    def latency_ratio(self) -> float | None:
        if self.canary_p99 is None or not self.primary_p99:
            return None
        return self.canary_p99 / self.primary_p99

    @property
    def agreement(self) -> float | None:
        return 1 - self.disagreements / self.comparisons if self.comparisons else None


def figures(totals: Samples, model: str, canary: str,
            baseline_p99: float | None = None) -> Figures:
    """The step's figures for `model`'s canary version `canary`. `baseline_p99` stands in for
    the primary's p99 when the primary answered nothing (the canary at 100 %)."""
    def count(name: str, **wanted: str) -> float:
        return sum(value for (metric, labels), value in totals.items()
                   if metric == name and wanted.items() <= dict(labels).items())

    canary_labels = {"model": model, "version": canary, "role": "canary"}
    primary_labels = {"model": model, "role": "primary"}
    canary_errors = count(ERRORS, **canary_labels)
    primary_errors = count(ERRORS, **primary_labels)
    primary_p99 = p99(totals, "primary")
    return Figures(
        canary_requests=count(PREDICTIONS, **canary_labels) + canary_errors,
        canary_errors=canary_errors,
        primary_requests=count(PREDICTIONS, **primary_labels) + primary_errors,
        primary_errors=primary_errors,
        canary_p99=p99(totals, "canary"),
        primary_p99=primary_p99 if primary_p99 is not None else baseline_p99,
        comparisons=count(COMPARISONS, model=model, version=canary),
        disagreements=count(DISAGREEMENTS, model=model, version=canary))


def p99(totals: Samples, role: str) -> float | None:
    buckets: dict[float, float] = {}
    for (metric, labels), value in totals.items():
        found = dict(labels)
        if metric == LATENCY_BUCKETS and found.get("role") == role:
            bound = float(found["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return quantile(0.99, sorted(buckets.items()))


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' `histogram_quantile` on cumulative (upper bound, count) pairs: linear within
    the bucket holding the rank; the +Inf bucket answers with the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


def failures(step: Figures, limits: Limits, latency: bool = True) -> list[str]:
    """What the step breaks, worded as the version tag says it: empty when it passes.
    `latency=False` leaves the p99 ratio out: a p99 of the first hundred requests is their
    slowest one, too noisy to end a step early on."""
    broken = []
    if step.error_rate > limits.max_error_rate:
        broken.append(f"error rate {step.error_rate:.3f} > {limits.max_error_rate:g}")
    ratio = step.latency_ratio
    if latency and ratio is not None and ratio > limits.max_latency_ratio:
        broken.append(f"p99 latency ratio {ratio:.2f} > {limits.max_latency_ratio:g}")
    agreement = step.agreement
    if agreement is not None and agreement < limits.min_agreement:
        broken.append(f"agreement {agreement:.3f} < {limits.min_agreement:g}")
    return broken


def summary(step: Figures) -> str:
    """One line of figures, for the progress lines and the version tag."""
    ratio = "-" if step.latency_ratio is None else f"{step.latency_ratio:.2f}"
    agreement = "-" if step.agreement is None else f"{step.agreement:.3f}"
    return (f"canary {step.canary_requests:.0f} requests, error rate {step.error_rate:.3f} "
            f"(primary {step.primary_error_rate:.3f}), p99 ratio {ratio}, "
            f"agreement {agreement}")
