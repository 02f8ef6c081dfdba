"""A step's figures from counter increases, and the verdict against the limits."""

from __future__ import annotations

import pytest

from mlflow_hotswap_plugin.fleet.analysis import Figures, Limits, failures, figures, quantile
from mlflow_hotswap_plugin.fleet.exposition import Samples, series

BOUNDS = ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "+Inf")


def latency(role: str, counts: list[int]) -> Samples:
    """Cumulative buckets for `role` from per-bucket counts."""
    total = 0
    found: Samples = {}
    for bound, count in zip(BOUNDS, counts, strict=True):
        total += count
        found[series("hotswap_prediction_duration_seconds_bucket", role=role, le=bound)] = total
    return found


def test_quantile_interpolates_as_prometheus_does() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.99, buckets) == pytest.approx(0.198)
    assert quantile(0.99, [(0.1, 0.0), (float("inf"), 5.0)]) == 0.1  # +Inf: highest bound
    assert quantile(0.99, [(0.1, 0.0)]) is None


def test_figures_compare_the_canary_version_with_the_primary() -> None:
    totals = {
        series("hotswap_predictions_total", model="m", version="3", role="canary"): 97.0,
        series("hotswap_prediction_errors_total", model="m", version="3", role="canary"): 3.0,
        series("hotswap_predictions_total", model="m", version="2", role="primary"): 900.0,
        series("hotswap_predictions_total", model="other", version="3", role="canary"): 50.0,
        series("hotswap_shadow_comparisons_total", model="m", version="3"): 200.0,
        series("hotswap_shadow_disagreements_total", model="m", version="3"): 2.0,
        **latency("canary", [0, 0, 0, 0, 0, 90, 10, 0]),
        **latency("primary", [0, 0, 900, 0, 0, 0, 0, 0]),
    }
    step = figures(totals, "m", "3")
    assert (step.canary_requests, step.canary_errors, step.primary_requests) == (100, 3, 900)
    assert step.error_rate == pytest.approx(0.03)
    assert step.agreement == pytest.approx(0.99)
    assert step.latency_ratio is not None and step.latency_ratio > 10
    assert failures(step, Limits()) == ["error rate 0.030 > 0.01",
                                        f"p99 latency ratio {step.latency_ratio:.2f} > 1.5"]


def test_at_full_share_the_primary_p99_comes_from_an_earlier_step() -> None:
    totals = latency("canary", [0, 0, 100, 0, 0, 0, 0, 0])
    assert figures(totals, "m", "3").latency_ratio is None
    assert figures(totals, "m", "3", baseline_p99=0.005).latency_ratio == pytest.approx(0.995)


def test_a_clean_step_passes_and_missing_figures_are_not_judged() -> None:
    assert failures(Figures(canary_requests=500, primary_requests=500), Limits()) == []
    low_agreement = Figures(canary_requests=10, comparisons=100, disagreements=10)
    assert failures(low_agreement, Limits()) == ["agreement 0.900 < 0.95"]
