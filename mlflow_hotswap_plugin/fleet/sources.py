"""Where a step's counter increases come from: the replicas' own `/metrics` (scraped at every
poll, restarts taken into account by deltas.Tally) or Prometheus' HTTP query API (`increase()`
over the step, which handles restarts the same way)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import requests

from mlflow_hotswap_plugin.fleet.analysis import METRICS
from mlflow_hotswap_plugin.fleet.deltas import Tally
from mlflow_hotswap_plugin.fleet.exposition import Samples, Series
from mlflow_hotswap_plugin.fleet.replicas import Page, read_all


class MetricSource(Protocol):
    def begin(self) -> None:
        """Start a step's measurement here."""

    def sample(self) -> list[Page]:
        """Take a reading; the replicas' pages when this source asks replicas."""

    def totals(self) -> Samples:
        """Increases since begin(), summed over replicas."""


class ReceiverMetrics:
    def __init__(self, urls: Sequence[str], session: requests.Session | None = None) -> None:
        self.urls = list(urls)
        self.session = session or requests.Session()
        self._tally = Tally()

    def begin(self) -> None:
        self._tally = Tally()
        self.sample()

    def sample(self) -> list[Page]:
        pages = read_all(self.urls, METRICS, self.session)
        for page in pages:
            if page.reachable:
                self._tally.observe(page.replica.url, page.samples)
        return pages

    def totals(self) -> Samples:
        return self._tally.totals()


class QuerySession(Protocol):
    """The one call PrometheusMetrics makes of a requests.Session."""

    def get(self, url: str, *, params: dict[str, str], timeout: float) -> requests.Response: ...


# Per metric, the labels the analysis needs kept apart.
_BY = {"hotswap_prediction_duration_seconds_bucket": "role, le",
       "hotswap_shadow_comparisons_total": "model, version",
       "hotswap_shadow_disagreements_total": "model, version",
       "hotswap_canary_fallbacks_total": "model, version"}


class PrometheusMetrics:
    def __init__(self, url: str, session: QuerySession | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url.rstrip("/")
        self.session: QuerySession = session or requests.Session()
        self.clock = clock
        self._started = clock()

    def begin(self) -> None:
        self._started = self.clock()

    def sample(self) -> list[Page]:
        return []

    def totals(self) -> Samples:
        window = max(1, math.ceil(self.clock() - self._started))
        found: Samples = {}
        for name in METRICS:
            by = _BY.get(name, "model, version, role")
            found.update(self._query(name, f"sum by ({by}) (increase({name}[{window}s]))"))
        return found

    def _query(self, name: str, promql: str) -> dict[Series, float]:
        answer = self.session.get(self.url + "/api/v1/query", params={"query": promql},
                                  timeout=10)
        answer.raise_for_status()
        found: dict[Series, float] = {}
        for result in answer.json()["data"]["result"]:
            labels = tuple(sorted((k, str(v)) for k, v in result["metric"].items()))
            value = float(result["value"][1])
            if math.isfinite(value):
                found[(name, labels)] = value
        return found
