"""A rollout from its first step to promoted or rolled back, with its state in the registry.

The order of writes is the safety: the share goes to 0 before anything else is recorded on an
abort, and the promotion target moves before the share is reset. A controller stopped by a
signal records `interrupted at N %`; one killed outright leaves `running at N %` and a lease
that expires by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from mlflow_hotswap_plugin.fleet.analysis import Figures, summary
from mlflow_hotswap_plugin.fleet.plan import Plan
from mlflow_hotswap_plugin.fleet.progress import Progress
from mlflow_hotswap_plugin.fleet.state import LeaseKeeper, RolloutTags, percent_text

PROMOTED, ROLLED_BACK = 0, 1


class Interrupted(Exception):
    """A signal asked the controller to stop."""


class Stopped(Exception):
    """Someone else ended this rollout (`--abort`, or another controller took the lease)."""


class Steps(Protocol):
    """What the controller needs of steps.StepRunner."""

    def converge(self, percent: float) -> str | None:
        """Wait until every replica serves the share; why not, on a timeout."""

    def hold(self, index: int) -> tuple[Figures, list[str]]:
        """The step's figures and the checks it failed."""


class Controller:
    def __init__(self, plan: Plan, tags: RolloutTags, lease: LeaseKeeper, progress: Progress,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.plan, self.tags, self.lease, self.progress = plan, tags, lease, progress
        self.clock = clock
        self._renewed = clock()
        self.percent = 0.0

    def run(self, runner: Steps, first: int = 0) -> int:
        """Steps from `first` on; the exit code."""
        try:
            return self._steps(runner, first)
        except Interrupted:
            where = f"interrupted at {percent_text(self.percent)} %"
            self.tags.record(where)
            self.lease.release()
            self.progress.line(f"{where}: resume with --resume, or end it with --abort")
            return ROLLED_BACK
        except Stopped as stop:
            self.progress.line(f"stopped: {stop}")
            return ROLLED_BACK

    def _steps(self, runner: Steps, first: int) -> int:
        plan = self.plan
        last: Figures | None = None
        for index in range(first, len(plan.steps)):
            self.percent = plan.steps[index]
            # The record first: killed between the two, a resume runs this step again.
            self.tags.record(f"running at {percent_text(self.percent)} %")
            self.tags.set_share(self.percent)
            self.progress.line(f"{plan.label(index)}: share set, waiting for every replica")
            late = runner.converge(self.percent)
            if late:
                return self.abort(late)
            self.progress.line(f"{plan.label(index)}: every replica took it; holding")
            last, broken = runner.hold(index)
            verdict = "failed: " + "; ".join(broken) if broken else "passed"
            self.progress.line(f"{plan.label(index)}: {summary(last)}: {verdict}")
            if broken:
                return self.abort("; ".join(broken))
        return self.promote(last)

    def tick(self) -> None:
        """At every poll: keep the lease, and stop if the rollout was ended elsewhere."""
        if self.clock() - self._renewed < self.lease.seconds / 3:
            return
        recorded = self.tags.recorded() or ""
        if recorded.startswith("aborted"):
            raise Stopped(f"the version tag says {recorded!r}")
        other = self.lease.held_by_other()
        if other is not None:
            raise Stopped(f"{other.holder} holds the lease now")
        self.lease.renew()
        self._renewed = self.clock()

    def abort(self, reason: str) -> int:
        self.tags.set_share(0)  # first: the canary stops taking traffic before anything else
        record = f"aborted at {percent_text(self.percent)} %: {reason}"
        self.tags.record(record)
        self.lease.release()
        self.progress.line(f"rolled back: {record}; {self.plan.target} untouched")
        return ROLLED_BACK

    def promote(self, last: Figures | None) -> int:
        plan = self.plan
        self.tags.promote(plan.promote_alias, plan.promote_stage)
        self.tags.set_share(0)
        steps = ",".join(percent_text(step) for step in plan.steps)
        at = percent_text(plan.steps[-1])
        figures = f": at {at} %: {summary(last)}" if last is not None else ""
        self.tags.record(f"promoted after steps {steps} %{figures}")
        self.lease.release()
        self.progress.line(f"promoted: {plan.target} -> version {plan.version}{figures}")
        return PROMOTED
