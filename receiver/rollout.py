"""Staged rollout decisions for one request: who answers (primary or canary), whether a shadow
also scores it, and whether the shadow agreed. Pure: no HTTP, no threads, no metrics.

The shares are the caller's to pass, read per request: they change at runtime (a registry tag
sets them), and each request sees one consistent reading.

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


@dataclass(frozen=True)
class Contender:
    """The version a canary or shadow reference points to now (None when nothing is there or
    it failed to load) and its current share (0-100)."""

    model: LoadedModel | None
    percent: float


class Router:
    def __init__(self, draw: Callable[[], float] = random.random) -> None:
        self._draw = draw

    def route(self, primary: LoadedModel, canary: Contender | None,
              shadow: Contender | None, key: str | None) -> Route:
        """A canary or shadow takes part only when its version differs from the primary's. A
        shadow only follows requests the primary answers: its output is compared with the
        primary's."""
        answering = self._drawn(canary, primary, key, "canary")
        if answering is not None:
            return Route(answering, "canary", fallback=primary)
        return Route(primary, "primary", self._drawn(shadow, primary, key, "shadow"))

    def _drawn(self, contender: Contender | None, primary: LoadedModel, key: str | None,
               salt: str) -> LoadedModel | None:
        """The contender's version when this request falls in its share, else None."""
        if contender is None or contender.model is None:
            return None
        if contender.model.version == primary.version:
            return None
        return contender.model if bucket(key, salt, self._draw) < contender.percent else None


def agree(primary: bytes, shadow: bytes) -> bool:
    """Whether two answers hold equal predictions: MLflow's `{"predictions": ...}`, or the
    Open Inference Protocol's `{"outputs": ...}` (its model_version differs by design)."""
    return _predictions(primary) == _predictions(shadow)


def _predictions(answer: bytes) -> object:
    document = json.loads(answer)
    return document["outputs"] if "outputs" in document else document.get("predictions")
