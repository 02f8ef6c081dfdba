"""Step increases from Prometheus' query API: one `increase()` per metric over the step, summed
by the labels the analysis needs, read back as the same series the replicas' pages give."""

from __future__ import annotations

from typing import Any

from mlflow_hotswap_plugin.fleet.analysis import LATENCY_BUCKETS, PREDICTIONS, figures
from mlflow_hotswap_plugin.fleet.exposition import series
from mlflow_hotswap_plugin.fleet.sources import PrometheusMetrics
from tests.support.fakes import ManualClock

ANSWERS = {
    PREDICTIONS: [{"metric": {"model": "m", "version": "3", "role": "canary"},
                   "value": [0, "120"]},
                  {"metric": {"model": "m", "version": "2", "role": "primary"},
                   "value": [0, "880.5"]}],
    LATENCY_BUCKETS: [{"metric": {"role": "canary", "le": "0.005"}, "value": [0, "120"]},
                      {"metric": {"role": "canary", "le": "+Inf"}, "value": [0, "120"]}],
}


class FakePrometheus:
    """Answers /api/v1/query by the metric the query names; records the queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def get(self, url: str, params: dict[str, str], timeout: float) -> Any:
        query = params["query"]
        self.queries.append(query)
        name = query.split("increase(")[1].split("[")[0]
        body = {"status": "success",
                "data": {"resultType": "vector", "result": ANSWERS.get(name, [])}}

        class Answer:
            def raise_for_status(self) -> None:
                pass

            def json(self) -> dict[str, Any]:
                return body

        return Answer()


def test_increases_over_the_step_come_back_as_series() -> None:
    clock, prometheus = ManualClock(), FakePrometheus()
    source = PrometheusMetrics("http://prometheus:9090/", session=prometheus,
                               clock=clock)
    source.begin()
    clock.sleep(12.3)
    assert source.sample() == []
    totals = source.totals()
    assert (f"sum by (model, version, role) (increase({PREDICTIONS}[13s]))"
            in prometheus.queries)
    assert f"sum by (role, le) (increase({LATENCY_BUCKETS}[13s]))" in prometheus.queries
    assert totals[series(PREDICTIONS, model="m", version="2", role="primary")] == 880.5
    step = figures(totals, "m", "3")
    assert (step.canary_requests, step.primary_requests) == (120, 880.5)
    assert step.canary_p99 is not None and 0.0025 < step.canary_p99 <= 0.005
