"""Admission by expected wait: how long the requests already admitted will take to score, from
the measured throughput of recent `predict` calls, against a budget (HOTSWAP_MAX_WAIT).

A batching server grows its batches under load, so its rows per second rise with the backlog:
a fixed count of requests is the wrong bound. The wait is what a client feels, so it is what is
bounded; the count (HOTSWAP_MAX_QUEUE) stays as a ceiling on memory. Before any `predict` has
been measured (cold), only the count applies.

Pure bookkeeping, no clock of its own and no I/O: the lane feeds it each call's rows and
seconds, and asks it before reading a request's body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from receiver.metrics import Metrics
from receiver.retryable import Retryable

# Weight of the newest call in the moving averages: about the last ten calls count, so the
# estimate follows a swap to a slower model within a fraction of a second under load.
NEWEST_WEIGHT = 0.2


class Overloaded(Retryable):
    """The requests admitted already are expected to take longer than HOTSWAP_MAX_WAIT, or
    number HOTSWAP_MAX_QUEUE; this one was not admitted."""


class Throughput:
    """Rows per second and rows per request of recent `predict` calls, exponentially weighted.

    A call's rate is its rows over its wall time in the lane (waiting for the GIL and for a
    predict thread included), so a busy event loop lowers it as it lowers what clients get;
    calls running side by side (unbatched versions) each count alone: an estimate on the
    side of refusing."""

    def __init__(self, newest_weight: float = NEWEST_WEIGHT) -> None:
        self._weight = newest_weight
        self._rows_per_second: float | None = None
        self._rows_per_request: float | None = None

    def record(self, rows: int, requests: int, seconds: float) -> None:
        """One finished `predict` call: `rows` rows of `requests` requests in `seconds`."""
        if rows <= 0 or requests <= 0:
            return  # nothing scored (every request of the call had gone): nothing learnt
        rate = rows / max(seconds, 1e-6)
        self._rows_per_second = self._mix(self._rows_per_second, rate)
        self._rows_per_request = self._mix(self._rows_per_request, rows / requests)

    def rows_per_second(self) -> float | None:
        """None until a call has been measured."""
        return self._rows_per_second

    def rows_per_request(self) -> float:
        """For requests admitted but not parsed yet, whose rows are not known (1 until
        measured)."""
        return 1.0 if self._rows_per_request is None else self._rows_per_request

    def _mix(self, average: float | None, sample: float) -> float:
        if average is None:
            return sample
        return (1 - self._weight) * average + self._weight * sample


@dataclass(frozen=True)
class Decision:
    admitted: bool
    # Seconds the admitted backlog is expected to take; None while cold.
    expected_wait: float | None
    # For a refusal: when to come back (whole seconds, at least 1).
    retry_after: int
    # Which bound refused: "wait" or "count"; "" when admitted.
    bound: str = ""


class AdmissionPolicy:
    """Admit while the backlog's expected wait fits `max_wait` and the count `max_queue`."""

    def __init__(self, max_wait: float, max_queue: int, throughput: Throughput) -> None:
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._throughput = throughput

    def expected_wait(self, parsed_rows: int, unparsed_requests: int) -> float | None:
        """Seconds to score the backlog: rows known from parsed bodies, plus requests not parsed
        yet at the recent rows per request. None while no call has been measured."""
        rate = self._throughput.rows_per_second()
        if rate is None:
            return None
        rows = parsed_rows + unparsed_requests * self._throughput.rows_per_request()
        return rows / rate

    def decide(self, admitted: int, parsed: int, parsed_rows: int) -> Decision:
        """Whether one more request may join `admitted` unanswered requests, `parsed` of which
        hold `parsed_rows` rows (the others are not parsed yet). The newcomer's own rows are
        unknown (its body is not read yet), so the backlog alone decides."""
        wait = self.expected_wait(parsed_rows, max(admitted - parsed, 0))
        if admitted >= self.max_queue:
            return Decision(False, wait, _retry_after(wait), "count")
        if wait is not None and wait > self.max_wait:
            return Decision(False, wait, _retry_after(wait), "wait")
        return Decision(True, wait, 0)


def _retry_after(wait: float | None) -> int:
    """Whole seconds until the backlog is expected to be gone; at least 1."""
    return max(1, math.ceil(wait)) if wait is not None else 1


class Ticket:
    """One admitted request's place in the backlog, from before its body is read until it is
    answered; a context manager that gives the place back."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._rows: int | None = None  # None until the body is parsed
        self._released = False

    def parsed(self, rows: int) -> None:
        """The body parsed to `rows` rows: the backlog counts them from now on."""
        if self._rows is None and not self._released:
            self._rows = rows
            self._admission.count_parsed(1, rows)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._rows is not None:
            self._admission.count_parsed(-1, -self._rows)
        self._admission.count_admitted(-1)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Admission:
    """The lane's backlog (requests admitted and not answered, and the rows of those parsed)
    and the decision to admit one more."""

    def __init__(self, max_wait: float, max_queue: int, metrics: Metrics) -> None:
        self.throughput = Throughput()
        self.policy = AdmissionPolicy(max_wait, max_queue, self.throughput)
        self._metrics = metrics
        self.depth = 0
        self._parsed = 0
        self._parsed_rows = 0

    def admit(self) -> Ticket:
        """A place for one more request, or Overloaded (cheap: called before its body is read).
        """
        decision = self.policy.decide(self.depth, self._parsed, self._parsed_rows)
        if not decision.admitted:
            self._metrics.shed_requests.labels(reason="overloaded").inc()
            raise Overloaded(_refusal(decision, self.policy), decision.retry_after)
        self.count_admitted(1)
        return Ticket(self)

    def expected_wait(self) -> float | None:
        """Seconds the admitted backlog is expected to take; None while cold."""
        return self.policy.expected_wait(self._parsed_rows, self.depth - self._parsed)

    def count_admitted(self, change: int) -> None:
        self.depth += change
        self._metrics.queue_depth.set(self.depth)
        # Set here, not computed when scraped: under several workers /metrics reads files.
        self._metrics.expected_wait.set(self.expected_wait() or 0.0)

    def count_parsed(self, requests: int, rows: int) -> None:
        self._parsed += requests
        self._parsed_rows += rows


def _refusal(decision: Decision, policy: AdmissionPolicy) -> str:
    if decision.bound == "count":
        backlog = f"holds {policy.max_queue} requests already (HOTSWAP_MAX_QUEUE)"
    else:
        backlog = (f"is about {decision.expected_wait:.1f} s behind, over its "
                   f"{policy.max_wait:g} s budget (HOTSWAP_MAX_WAIT)")
    return f"The server {backlog}; retry in {decision.retry_after} s."
