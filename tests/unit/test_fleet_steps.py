"""A step judged on recorded metric pages: three replicas whose pages come from the receiver's
real metric objects, traffic added between polls, a clock that moves only when slept on."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from mlflow_hotswap_plugin.fleet.analysis import Limits
from mlflow_hotswap_plugin.fleet.deltas import Tally
from mlflow_hotswap_plugin.fleet.exposition import Samples
from mlflow_hotswap_plugin.fleet.plan import Plan
from mlflow_hotswap_plugin.fleet.progress import Progress
from mlflow_hotswap_plugin.fleet.replicas import Page
from mlflow_hotswap_plugin.fleet.steps import StepRunner
from tests.support.fakes import ManualClock
from tests.support.fleet import FakeReplica

Traffic = Callable[[int, list[FakeReplica]], None]


class Recorded:
    """A MetricSource over fake replicas; `traffic(poll, replicas)` runs before each reading."""

    def __init__(self, replicas: list[FakeReplica], traffic: Traffic) -> None:
        self.replicas, self.traffic, self.polls = replicas, traffic, 0
        self.tally = Tally()

    def begin(self) -> None:
        self.tally = Tally()
        self.sample()

    def sample(self) -> list[Page]:
        self.traffic(self.polls, self.replicas)
        self.polls += 1
        pages = [replica.page() for replica in self.replicas]
        for page in pages:
            if page.reachable:
                self.tally.observe(page.replica.url, page.samples)
        return pages

    def totals(self) -> Samples:
        return self.tally.totals()


PLAN = Plan("m", "@challenger", "3", "2", steps=(25, 100), step_seconds=5, max_wait=20,
            limits=Limits(min_requests=100), promote_alias="champion", poll_seconds=0.5)


def fleet() -> list[FakeReplica]:
    replicas = [FakeReplica(f"10.0.0.{i}:8080") for i in range(3)]
    for replica in replicas:
        replica.serve("2", "3", 25)
    return replicas


def healthy(poll: int, replicas: list[FakeReplica]) -> None:
    for replica in replicas:
        replica.answer("canary", "3", 10, 0.004)
        replica.answer("primary", "2", 30, 0.004)


def runner(source: Recorded, plan: Plan = PLAN) -> StepRunner:
    clock = ManualClock()
    return StepRunner(plan, source, Progress(io.StringIO()), tick=lambda: None, clock=clock,
                      sleep=clock.sleep)


def test_a_healthy_canary_passes_after_its_hold() -> None:
    source = Recorded(fleet(), healthy)
    step, broken = runner(source).hold(0)
    assert broken == []
    assert source.polls == 11  # the baseline, then 5 s of 0.5 s polls
    assert step.canary_requests == 300 and step.primary_requests == 900
    assert step.latency_ratio is not None and 0.9 < step.latency_ratio < 1.1


def test_failing_predictions_end_the_step_as_soon_as_enough_were_seen() -> None:
    def failing(poll: int, replicas: list[FakeReplica]) -> None:
        healthy(poll, replicas)
        # Through the Open Inference Protocol: the step counts every protocol's answers.
        replicas[poll % 3].answer("canary", "3", 0, 0, errors=1, protocol="v2")

    source = Recorded(fleet(), failing)
    step, broken = runner(source).hold(0)
    assert source.polls < 11
    assert step.canary_requests >= 100
    assert broken == [f"error rate {step.error_rate:.3f} > 0.01"]


def test_a_slow_canary_fails_the_latency_check() -> None:
    def slow(poll: int, replicas: list[FakeReplica]) -> None:
        for replica in replicas:
            replica.answer("canary", "3", 10, 0.04)
            replica.answer("primary", "2", 30, 0.004)

    source = Recorded(fleet(), slow)
    _, broken = runner(source).hold(0)
    assert len(broken) == 1 and broken[0].startswith("p99 latency ratio")
    assert source.polls == 11  # judged on the whole step


def test_a_slow_start_does_not_end_the_step_when_the_step_as_a_whole_is_fast() -> None:
    def slow_first(poll: int, replicas: list[FakeReplica]) -> None:
        healthy(poll, replicas)
        if poll == 1:  # one slow batch of the canary's, as a cold cache or a pause gives
            replicas[0].answer("canary", "3", 2, 0.05)

    source = Recorded(fleet(), slow_first)
    step, broken = runner(source).hold(0)
    assert broken == []
    assert source.polls == 11
    assert step.latency_ratio is not None and step.latency_ratio < 1.5


def test_a_replica_restarted_mid_step_reads_as_what_it_did_since() -> None:
    def restarting(poll: int, replicas: list[FakeReplica]) -> None:
        if poll == 0:  # before the baseline: years of traffic
            replicas[0].answer("canary", "3", 100_000, 0.004)
        if poll == 4:
            replicas[0].restart()
        healthy(poll, replicas)

    step, broken = runner(Recorded(fleet(), restarting)).hold(0)
    assert broken == []
    # Each poll after the baseline adds 10 per replica; the restart loses one interval of one.
    assert 290 <= step.canary_requests <= 300


def test_a_replica_unreachable_for_the_whole_step_fails_it() -> None:
    replicas = fleet()
    replicas[2].reachable = False
    _, broken = runner(Recorded(replicas, healthy)).hold(0)
    assert broken == ["replica 10.0.0.2:8080 unreachable for the whole step"]


def test_too_few_canary_requests_by_max_wait_fails_the_step() -> None:
    def trickle(poll: int, replicas: list[FakeReplica]) -> None:
        replicas[0].answer("canary", "3", 1, 0.004)

    source = Recorded(fleet(), trickle)
    _, broken = runner(source).hold(0)
    assert broken == ["too few canary requests: 40 < 100 in 20 s"]


def test_converge_waits_for_every_replica_to_take_the_share() -> None:
    replicas = fleet()

    def late(poll: int, fleet_: list[FakeReplica]) -> None:
        for replica in fleet_[:2] if poll < 3 else fleet_:
            replica.serve("2", "3", 50)

    source = Recorded(replicas, late)
    assert runner(source).converge(50) is None
    assert source.polls == 4
    stuck = Recorded(fleet(), lambda poll, fleet_: None)
    assert runner(stuck).converge(50) == (
        "10.0.0.0:8080, 10.0.0.1:8080, 10.0.0.2:8080 did not take 50 % within 20 s")


def test_a_step_lasts_its_seconds_from_the_moment_its_share_was_set() -> None:
    def late(poll: int, fleet_: list[FakeReplica]) -> None:
        for replica in fleet_ if poll >= 4 else fleet_[:2]:
            replica.serve("2", "3", 50)
        healthy(poll, fleet_)

    clock = ManualClock()
    steps = StepRunner(PLAN, Recorded(fleet(), late), Progress(io.StringIO()),
                       tick=lambda: None, clock=clock, sleep=clock.sleep)
    set_at = clock()
    assert steps.converge(50) is None
    _, broken = steps.hold(0)
    assert broken == []
    # The 5 s include the 2 s the last replica took to catch up.
    assert clock() - set_at == PLAN.step_seconds


def test_the_last_poll_of_a_step_lands_on_its_end() -> None:
    clock = ManualClock()
    plan = Plan("m", "@challenger", "3", "2", steps=(25, 100), step_seconds=1.2, max_wait=20,
                limits=Limits(min_requests=10), promote_alias="champion", poll_seconds=0.5)
    steps = StepRunner(plan, Recorded(fleet(), healthy), Progress(io.StringIO()),
                       tick=lambda: None, clock=clock, sleep=clock.sleep)
    started = clock()
    _, broken = steps.hold(0)
    assert broken == [] and clock() - started == pytest.approx(1.2)
