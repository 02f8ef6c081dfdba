"""The one way to run blocking work off the event loop, and the bounds on it.

Everything blocking goes through anyio's `to_thread.run_sync` (Starlette's own threadpool is a
wrapper of it) with one of the named limiters made here, once per app, so a reader finds every
bound in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")

# Downloads, loads and registry calls: mostly waiting on the network and disk, so a few run at
# once; each pinned-version miss holds one while it loads, so a flood of them cannot take every
# thread the predictions need.
MODEL_WORK_THREADS = 4
# Request bodies parsed at once, outside the predict slot: parsing holds the GIL, so more
# threads would only contend, but more than one keeps a large body from delaying small ones.
PARSE_THREADS = 4
# Shadow predictions: one thread of their own, so a primary never waits for a slot behind one.
SHADOW_THREADS = 1


@dataclass(frozen=True)
class Limiters:
    """The bounds on worker threads: model work, parsing request bodies, predictions, shadow
    predictions."""

    model_work: anyio.CapacityLimiter
    predictions: anyio.CapacityLimiter
    parsing: anyio.CapacityLimiter
    shadow: anyio.CapacityLimiter

    @classmethod
    def create(cls, predict_threads: int) -> Limiters:
        # anyio lets a limiter be made before the event loop runs; it binds on first use.
        return cls(model_work=anyio.CapacityLimiter(MODEL_WORK_THREADS),
                   predictions=anyio.CapacityLimiter(predict_threads),
                   parsing=anyio.CapacityLimiter(PARSE_THREADS),
                   shadow=anyio.CapacityLimiter(SHADOW_THREADS))


async def run(limiter: anyio.CapacityLimiter, func: Callable[P, T], /, *args: P.args,
              **kwargs: P.kwargs) -> T:
    """`func(*args, **kwargs)` in a worker thread, holding a token of `limiter` while it runs.

    The limiter comes first so that the arguments are typed as `func`'s own. The thread is
    not cancelled with its caller (that would free its token while it still runs): the
    caller's cancellation waits until `func` returns."""
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs),
                                          limiter=limiter)
