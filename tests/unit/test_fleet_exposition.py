"""The rollout's own reader of Prometheus' text format, checked against what the receiver's
metrics really print (prometheus_client's output)."""

from __future__ import annotations

from prometheus_client import generate_latest

from mlflow_hotswap_plugin.fleet.exposition import parse, series
from receiver.metrics import Metrics


def test_reads_what_the_receiver_prints() -> None:
    metrics = Metrics()
    metrics.predictions.labels(model="m", version="2", role="canary", protocol="v2").inc(7)
    metrics.prediction_duration.labels(role="canary").observe(0.003)
    samples = parse(generate_latest(metrics.registry).decode())
    assert samples[series("hotswap_predictions_total", model="m", version="2",
                          role="canary", protocol="v2")] == 7
    bucket = "hotswap_prediction_duration_seconds_bucket"
    assert samples[series(bucket, role="canary", le="0.0025")] == 0
    assert samples[series(bucket, role="canary", le="0.005")] == 1
    assert samples[series(bucket, role="canary", le="+Inf")] == 1
    assert samples[series("hotswap_start_time_seconds")] > 0


def test_escaped_label_values_timestamps_and_a_name_filter() -> None:
    text = "\n".join([
        "# HELP x_total a counter",
        "# TYPE x_total counter",
        'x_total{path="a\\"b\\\\c\\nd",code="200"} 3 1700000000000',
        "y 1.5",
        'z{broken="} 1',
        "w NaN",
    ])
    assert parse(text) == {series("x_total", path='a"b\\c\nd', code="200"): 3.0,
                           series("y"): 1.5}
    assert parse(text, names=["y"]) == {series("y"): 1.5}
