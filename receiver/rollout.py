"""Staged rollout decisions for one request: who answers (primary or canary), whether a shadow
also scores it, and whether the shadow agreed. Pure: no HTTP, no threads, no metrics.

A request carrying `X-Hotswap-Key` lands in a bucket from the key's hash, so the same key
always gets the same side; without a key the bucket is random. The canary and the shadow
draw from independent buckets, so a shadow's share is not skewed by the canary's.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from receiver.references import Share
from receiver.registry import LoadedModel

Role = Literal["primary", "canary", "shadow"]


@dataclass(frozen=True)
class Route:
    """Who answers one request and who, if anyone, shadows it afterwards."""

    model: LoadedModel
    role: Role
    shadow: LoadedModel | None = None
    fallback: LoadedModel | None = None  # answers when a canary's predict fails


def bucket(key: str | None, salt: str, draw: Callable[[], float] = random.random) -> float:
    """A point in [0, 100): fixed for a key (per salt), random without one."""
    if key is None:
        return draw() * 100
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


class Router:
    def __init__(self, canary: Share | None, shadow: Share | None,
                 draw: Callable[[], float] = random.random) -> None:
        self._canary = canary
        self._shadow = shadow
        self._draw = draw

    def route(self, primary: LoadedModel, canary: LoadedModel | None,
              shadow: LoadedModel | None, key: str | None) -> Route:
        """`canary` and `shadow` are the versions their references point to now (None when
        nothing is there or it failed to load); they take part only when they differ from
        the primary. A shadow only follows requests the primary answers: its output is
        compared with the primary's."""
        if (self._canary is not None and canary is not None
                and canary.version != primary.version
                and bucket(key, "canary", self._draw) < self._canary.percent):
            return Route(canary, "canary", fallback=primary)
        if (self._shadow is not None and shadow is not None
                and shadow.version != primary.version
                and bucket(key, "shadow", self._draw) < self._shadow.percent):
            return Route(primary, "primary", shadow)
        return Route(primary, "primary")


def agree(primary: bytes, shadow: bytes) -> bool:
    """Whether two `{"predictions": ...}` answers hold equal predictions."""
    predictions: object = json.loads(primary).get("predictions")
    return bool(predictions == json.loads(shadow).get("predictions"))
