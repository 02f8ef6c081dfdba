"""Counter increases over a step, summed over replicas, that survive a replica's restart.

A restarted replica's counters start again from zero. Read naively, `now - before` is then
negative (or, summed with others, nonsense). A replica whose process start time changed, or
whose counters went down (or lost a series) as Prometheus' `increase()` judges it, has
restarted: what it reports now all happened since the restart. The start time catches the
restart the counters alone cannot show: one that climbed back past its old value. A page is
judged whole, so a histogram's buckets stay consistent with each other. Only counters belong
here (gauges go down for good reasons).
"""

from __future__ import annotations

from collections import defaultdict

from mlflow_hotswap_plugin.fleet.exposition import Samples, Series, series

_START = series("hotswap_start_time_seconds")


def restarted(before: Samples, now: Samples) -> bool:
    """Whether a replica restarted: a new start time, or a counter lower or gone."""
    if _START in before and _START in now and before[_START] != now[_START]:
        return True
    return any(now.get(key, -1.0) < value for key, value in before.items() if key != _START)


def increases(before: Samples, now: Samples) -> Samples:
    """What each counter gained from `before` to `now`; never negative."""
    counters = {key: value for key, value in now.items() if key != _START}
    if restarted(before, now):
        return {key: value for key, value in counters.items() if value > 0}
    # A series absent before had not been used yet: prometheus_client shows a labelled
    # series only from its first increment, so it counted from zero.
    return {key: value - before.get(key, 0.0) for key, value in counters.items()
            if value > before.get(key, 0.0)}


class Tally:
    """The increases since each replica's first page, summed over replicas. A replica seen for
    the first time only sets its baseline: what it counted before is not this step's."""

    def __init__(self) -> None:
        self._last: dict[str, Samples] = {}
        self._sum: defaultdict[Series, float] = defaultdict(float)

    def observe(self, replica: str, page: Samples) -> None:
        before = self._last.get(replica)
        self._last[replica] = page
        if before is None:
            return
        for key, gained in increases(before, page).items():
            self._sum[key] += gained

    def totals(self) -> Samples:
        return dict(self._sum)

    def replicas(self) -> set[str]:
        return set(self._last)
