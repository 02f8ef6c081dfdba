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
    """Rows per second and rows per request of recent `predict` calls: the exponentially
    weighted rows, requests and seconds of each call, and their ratios.

    Ratios of the averages, not averages of each call's ratio: a call weighs by its work, so a
    30,000-row call in 60 ms is not outvoted by a few one-row calls whose time is mostly fixed
    overhead, and a backlog of large requests is not priced at the small calls' rate.

    A call's time is what it adds to the lane's busy time, from its start or the previous
    call's end, whichever is later: calls side by side (unbatched versions) count as the
    throughput they make together, and waiting for the GIL or a predict thread counts, so a
    busy event loop lowers the rate as it lowers what clients get."""

    def __init__(self, newest_weight: float = NEWEST_WEIGHT) -> None:
        self._weight = newest_weight
        self._rows: float | None = None
        self._requests = 0.0
        self._seconds = 0.0

    def record(self, rows: int, requests: int, seconds: float) -> None:
        """One finished `predict` call: `rows` rows of `requests` requests in `seconds`."""
        if rows <= 0 or requests <= 0:
            return  # nothing scored (every request of the call had gone): nothing learnt
        seconds = max(seconds, 1e-6)
        if self._rows is None:
            self._rows, self._requests, self._seconds = rows, requests, seconds
            return
        keep = 1 - self._weight
        self._rows = keep * self._rows + self._weight * rows
        self._requests = keep * self._requests + self._weight * requests
        self._seconds = keep * self._seconds + self._weight * seconds

    def rows_per_second(self) -> float | None:
        """None until a call has been measured."""
        return None if self._rows is None else self._rows / self._seconds

    def rows_per_request(self) -> float:
        """For requests admitted but not parsed yet, whose rows are not known (1 until
        measured)."""
        return 1.0 if self._rows is None else self._rows / self._requests


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
    """Admit while the backlog's expected wait fits `max_wait` and the count `max_queue`.

    `horizon` (HOTSWAP_REQUEST_TIMEOUT): every admitted request is answered or dropped within
    it, so the backlog is gone by then whatever the estimate says. It bounds the wait that is
    reported and the Retry-After: a request far larger than the recent calls is priced at their
    rate until one like it has been scored, which can overstate its cost a thousandfold."""

    def __init__(self, max_wait: float, max_queue: int, throughput: Throughput,
                 horizon: float = math.inf) -> None:
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.horizon = horizon
        self._throughput = throughput

    def expected_wait(self, parsed_rows: int, unparsed_requests: int) -> float | None:
        """Seconds to score the backlog: rows known from parsed bodies, plus requests not parsed
        yet at the recent rows per request; at most the horizon. None while no call has been
        measured."""
        rate = self._throughput.rows_per_second()
        if rate is None:
            return None
        rows = parsed_rows + unparsed_requests * self._throughput.rows_per_request()
        return min(rows / rate, self.horizon)

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

    def __init__(self, max_wait: float, max_queue: int, metrics: Metrics,
                 horizon: float = math.inf) -> None:
        self.throughput = Throughput()
        self.policy = AdmissionPolicy(max_wait, max_queue, self.throughput, horizon)
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
