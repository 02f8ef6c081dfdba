"""The controller's writes to the registry, in order: share first on an abort, the promotion
target before the share on a promotion; a signal records where it stood; a lease held by a
live controller is respected and one past its expiry is not."""

from __future__ import annotations

import io
from typing import Any

import pytest

from mlflow_hotswap_plugin.fleet import launch
from mlflow_hotswap_plugin.fleet.analysis import Figures
from mlflow_hotswap_plugin.fleet.controller import Controller, Interrupted
from mlflow_hotswap_plugin.fleet.plan import Plan
from mlflow_hotswap_plugin.fleet.progress import Progress
from mlflow_hotswap_plugin.fleet.state import (
    LEASE_TAG,
    ROLLOUT_TAG,
    SHARE_TAG,
    Lease,
    LeaseKeeper,
    RolloutTags,
    resumable_at,
)
from tests.support.fakes import ManualClock
from tests.support.fleet import FakeRegistryClient

PLAN = Plan("m", "@challenger", "3", "2", steps=(5, 25, 100), step_seconds=1,
            promote_alias="champion")


class ScriptedRunner:
    """Steps that pass, except the ones named to fail; `interrupt_at` raises as a signal."""

    def __init__(self, fail_at: int | None = None, interrupt_at: int | None = None) -> None:
        self.fail_at, self.interrupt_at = fail_at, interrupt_at
        self.held: list[int] = []

    def converge(self, percent: float) -> str | None:
        return None

    def hold(self, index: int) -> tuple[Figures, list[str]]:
        if index == self.interrupt_at:
            raise Interrupted("SIGTERM")
        self.held.append(index)
        broken = ["error rate 0.031 > 0.01"] if index == self.fail_at else []
        return Figures(canary_requests=100, canary_errors=3 if broken else 0), broken


def controller(client: FakeRegistryClient, clock: ManualClock | None = None) -> Controller:
    clock = clock or ManualClock()
    lease = LeaseKeeper(client, "m", seconds=15, holder="me", clock=clock)
    assert lease.take()
    tags = RolloutTags(client, "m", "3")
    return Controller(PLAN, tags, lease, Progress(io.StringIO()), clock=clock)


def writes(client: FakeRegistryClient) -> list[tuple[Any, ...]]:
    return [call for call in client.calls if call[1:2] != (LEASE_TAG,)]


def test_a_passing_rollout_steps_through_and_promotes() -> None:
    client = FakeRegistryClient(aliases={"champion": "2", "challenger": "3"})
    runner = ScriptedRunner()
    assert controller(client).run(runner) == 0
    assert runner.held == [0, 1, 2]
    assert writes(client)[-3:-1] == [("alias", "champion", "3"), ("model_tag", SHARE_TAG, "0")]
    assert client.version_tags["3"][ROLLOUT_TAG].startswith(
        "promoted after steps 5,25,100 %: at 100 %: canary 100 requests, error rate 0.000")
    assert LEASE_TAG not in client.model_tags


def test_a_failing_step_sets_the_share_to_0_first_and_leaves_the_champion() -> None:
    client = FakeRegistryClient(aliases={"champion": "2", "challenger": "3"})
    assert controller(client).run(ScriptedRunner(fail_at=1)) == 1
    assert writes(client)[-2:] == [
        ("model_tag", SHARE_TAG, "0"),
        ("version_tag", "3", ROLLOUT_TAG, "aborted at 25 %: error rate 0.031 > 0.01")]
    assert client.aliases["champion"] == "2"
    assert LEASE_TAG not in client.model_tags


def test_a_signal_records_where_it_stood_and_resume_reads_it() -> None:
    client = FakeRegistryClient()
    assert controller(client).run(ScriptedRunner(interrupt_at=1)) == 1
    recorded = client.version_tags["3"][ROLLOUT_TAG]
    assert recorded == "interrupted at 25 %"
    assert resumable_at(recorded) == 25
    assert client.model_tags[SHARE_TAG] == "25"  # the share stays until resumed or aborted
    assert resumable_at("running at 5 %") == 5
    assert resumable_at("aborted at 25 %: error rate 0.031 > 0.01") is None


def test_an_abort_recorded_elsewhere_stops_the_controller() -> None:
    client, clock = FakeRegistryClient(), ManualClock()
    running = controller(client, clock)
    client.version_tags["3"] = {ROLLOUT_TAG: "aborted at 5 %: by request (--abort)"}
    clock.sleep(10)
    with pytest.raises(Exception, match="aborted at 5 %"):
        running.tick()


def test_a_live_lease_is_respected_and_an_expired_one_is_not() -> None:
    client, clock = FakeRegistryClient(), ManualClock()
    first = LeaseKeeper(client, "m", seconds=15, holder="a", clock=clock)
    second = LeaseKeeper(client, "m", seconds=15, holder="b", clock=clock)
    assert first.take()
    held = second.held_by_other()
    assert held is not None and held.holder == "a"
    assert Lease.parse(client.model_tags[LEASE_TAG]) == held
    clock.sleep(16)
    assert second.held_by_other() is None
    assert second.take()
    first.release()  # not its lease any more: left alone
    kept = Lease.parse(client.model_tags[LEASE_TAG])
    assert kept is not None and kept.holder == "b"


def test_abort_sets_the_share_to_0_records_where_it_stood_and_clears_any_lease() -> None:
    client = FakeRegistryClient(model_tags={SHARE_TAG: "25"},
                                version_tags={"3": {ROLLOUT_TAG: "running at 25 %"}})
    LeaseKeeper(client, "m", holder="crashed").take()
    tags = RolloutTags(client, "m", "3")
    lease = LeaseKeeper(client, "m", holder="me")
    assert launch.abort(PLAN, tags, lease, Progress(io.StringIO())) == 1
    assert client.model_tags == {SHARE_TAG: "0"}
    assert client.version_tags["3"][ROLLOUT_TAG] == "aborted at 25 %: by request (--abort)"


def test_resume_starts_again_at_the_step_the_tag_names() -> None:
    client = FakeRegistryClient(version_tags={"3": {ROLLOUT_TAG: "interrupted at 25 %"}})
    tags = RolloutTags(client, "m", "3")
    assert launch._first_step(True, PLAN, tags) == 1
    assert launch._first_step(False, PLAN, tags) == 0
    client.version_tags["3"][ROLLOUT_TAG] = "promoted after steps 5,25,100 %"
    refusal = launch._first_step(True, PLAN, tags)
    assert isinstance(refusal, str) and refusal.startswith("nothing to resume")
