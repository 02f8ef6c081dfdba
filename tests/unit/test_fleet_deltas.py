"""Counter increases over a step survive replica restarts: never negative, never more than what
truly happened, exact when nothing was lost between two readings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlflow_hotswap_plugin.fleet.deltas import Tally, increases, restarted
from mlflow_hotswap_plugin.fleet.exposition import Samples, series

KEYS = [series("hotswap_predictions_total", role=role) for role in ("primary", "canary")]
START = series("hotswap_start_time_seconds")

# One replica's life: ("inc", key, amount), ("restart", 0, 0) or ("read", 0, 0).
ops = st.lists(st.one_of(
    st.tuples(st.just("inc"), st.integers(0, len(KEYS) - 1), st.integers(1, 50)),
    st.tuples(st.just("restart"), st.just(0), st.just(0)),
    st.tuples(st.just("read"), st.just(0), st.just(0))), max_size=60)
Op = tuple[str, int, int]


def live(ops_: list[Op], read_before_restart: bool = False,
         start_time: bool = True) -> tuple[Samples, Samples]:
    """Replay ops on one replica; (what the tally summed, what truly happened after its first
    reading). A counter shows only once used, as prometheus_client's labelled ones do; the
    page carries the process start time unless `start_time` is False."""
    tally = Tally()
    counters: Samples = {}
    truth: Samples = {}
    first_read, started = False, 1.0

    def page() -> Samples:
        return {**counters, START: started} if start_time else dict(counters)

    for op in ops_:
        if op[0] == "inc":
            key = KEYS[op[1]]
            counters[key] = counters.get(key, 0) + op[2]
            if first_read:
                truth[key] = truth.get(key, 0) + op[2]
        elif op[0] == "restart":
            if read_before_restart:
                tally.observe("r", page())
                first_read = True
            counters, started = {}, started + 1
        else:
            tally.observe("r", page())
            first_read = True
    tally.observe("r", page())
    return tally.totals(), truth


@given(ops, st.booleans())
def test_a_sum_is_never_negative_nor_more_than_happened(ops_: list[Op],
                                                        start_time: bool) -> None:
    summed, truth = live(ops_, start_time=start_time)
    assert START not in summed
    for key in KEYS:
        assert 0 <= summed.get(key, 0) <= truth.get(key, 0)


@given(ops)
def test_a_sum_is_exact_when_each_restart_was_read_just_before(
        ops_: list[Op]) -> None:
    summed, truth = live(ops_, read_before_restart=True)
    assert {k: v for k, v in summed.items() if v} == {k: v for k, v in truth.items() if v}


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=5))
def test_without_a_restart_the_increase_is_the_difference(values: list[int]) -> None:
    before = {key: float(value) for key, value in zip(KEYS, values, strict=False)}
    now = {key: value + 7 for key, value in before.items()}
    assert not restarted(before, now)
    assert increases(before, now) == dict.fromkeys(before, 7)


def test_a_restart_that_climbed_back_shows_by_its_start_time() -> None:
    before = {KEYS[0]: 10.0, START: 100.0}
    now = {KEYS[0]: 12.0, START: 200.0}
    assert restarted(before, now)
    assert increases(before, now) == {KEYS[0]: 12.0}


def test_a_restarted_replica_counts_what_it_shows_now_and_the_others_add_up() -> None:
    canary = KEYS[1]
    tally = Tally()
    tally.observe("a", {canary: 1000.0})
    tally.observe("b", {canary: 50.0})
    tally.observe("a", {canary: 3.0})  # restarted: 3 since the restart, not -997
    tally.observe("b", {canary: 60.0})
    assert tally.totals() == {canary: 13.0}


def test_a_series_gone_means_a_restart_even_when_others_grew() -> None:
    primary, canary = KEYS
    assert restarted({primary: 5.0, canary: 2.0}, {primary: 9.0})
    assert increases({primary: 5.0, canary: 2.0}, {primary: 9.0}) == {primary: 9.0}


def test_a_replica_first_seen_mid_step_sets_its_baseline_only() -> None:
    tally = Tally()
    tally.observe("late", {KEYS[0]: 500.0})
    assert tally.totals() == {}
    tally.observe("late", {KEYS[0]: 510.0})
    assert tally.totals() == {KEYS[0]: 10.0}
