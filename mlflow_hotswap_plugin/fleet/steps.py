"""One step of a rollout: wait until every replica serves the canary at the step's share, then
measure until the step has lasted `--step-seconds` (counted from the moment its share was set:
the push to the replicas is part of the step, not added to it) and seen enough canary requests.
The step ends early as soon as the error rate or the agreement fails on enough requests; the
latency is judged on the whole step."""

from __future__ import annotations

import time
from collections.abc import Callable

from mlflow_hotswap_plugin.fleet.analysis import Figures, failures, figures, summary
from mlflow_hotswap_plugin.fleet.plan import Plan
from mlflow_hotswap_plugin.fleet.progress import Progress
from mlflow_hotswap_plugin.fleet.replicas import Page
from mlflow_hotswap_plugin.fleet.sources import MetricSource
from mlflow_hotswap_plugin.fleet.state import percent_text


def took_share(page: Page, plan: Plan, percent: float) -> bool:
    canary = page.model(plan.name).get("canary") or {}
    return bool(canary.get("version") == plan.version and canary.get("percent") == percent)


class StepRunner:
    """`tick` runs at every poll (the controller keeps its lease there and may stop)."""

    def __init__(self, plan: Plan, metrics: MetricSource, progress: Progress,
                 tick: Callable[[], None], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.plan, self.metrics, self.progress = plan, metrics, progress
        self.tick, self.clock, self.sleep = tick, clock, sleep
        self.baseline_p99: float | None = None  # the primary's, for a step it answers nothing
        self._share_set_at: float | None = None

    def converge(self, percent: float) -> str | None:
        """Wait until every replica that answers serves the share (just set); why not, on a
        timeout."""
        self._share_set_at = self.clock()
        deadline = self._share_set_at + self.plan.max_wait
        while True:
            self.tick()
            pages = [page for page in self.metrics.sample() if page.ready]
            behind = [page.replica.address for page in pages
                      if not took_share(page, self.plan, percent)]
            if not behind:
                return None
            if self.clock() >= deadline:
                return (f"{', '.join(behind)} did not take {percent_text(percent)} % "
                        f"within {self.plan.max_wait:g} s")
            self.sleep(self.plan.poll_seconds)

    def hold(self, index: int) -> tuple[Figures, list[str]]:
        """Measure the step; its figures and the checks it failed (none: it passed)."""
        plan = self.plan
        started = self._share_set_at if self._share_set_at is not None else self.clock()
        self._share_set_at = None
        self.metrics.begin()
        seen: set[str] = set()
        answered: set[str] = set()
        while True:
            # The last poll of a step lands on its end, not up to a poll interval past it.
            remaining = started + plan.step_seconds - self.clock()
            self.sleep(min(plan.poll_seconds, remaining) if remaining > 0 else plan.poll_seconds)
            self.tick()
            pages = self.metrics.sample()
            seen |= {page.replica.address for page in pages}
            answered |= {page.replica.address for page in pages if page.reachable}
            step = figures(self.metrics.totals(), plan.name, plan.version, self.baseline_p99)
            elapsed = self.clock() - started
            enough = step.canary_requests >= plan.limits.min_requests
            broken = failures(step, plan.limits, latency=False) if enough else []
            self._show(index, elapsed, step)
            if broken:
                return step, broken
            if elapsed >= plan.step_seconds and (enough or elapsed >= plan.max_wait):
                self._remember_primary(step)
                return step, self._final_checks(step, enough, seen - answered)

    def _final_checks(self, step: Figures, enough: bool, silent: set[str]) -> list[str]:
        broken = [f"replica {address} unreachable for the whole step"
                  for address in sorted(silent)]
        if enough:
            broken += failures(step, self.plan.limits)
        else:
            broken.append(f"too few canary requests: {step.canary_requests:.0f} < "
                          f"{self.plan.limits.min_requests} in {self.plan.max_wait:g} s")
        return broken

    def _remember_primary(self, step: Figures) -> None:
        if step.primary_requests >= self.plan.limits.min_requests and step.primary_p99:
            self.baseline_p99 = step.primary_p99

    def _show(self, index: int, elapsed: float, step: Figures) -> None:
        plan = self.plan
        done = min(elapsed / plan.step_seconds if plan.step_seconds else 1.0,
                   step.canary_requests / max(1, plan.limits.min_requests))
        self.progress.bar(plan.label(index), done, f"{elapsed:.0f}s {summary(step)}")
