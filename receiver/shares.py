"""The canary's and the shadow's current shares of the traffic, per served model.

A share written in MODEL_CANARY or MODEL_SHADOW (`@challenger:20`) is fixed. A reference without
a percent (`@challenger`) takes its share from the registered model's tag, read at every
refresh, so a rollout moves it on every replica at once by setting one tag. Pure: the tags come
from the refresh's one registry answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from receiver.references import Share, parse_percent

logger = logging.getLogger(__name__)

CANARY_TAG = "hotswap.canary_percent"
SHADOW_TAG = "hotswap.shadow_percent"

Source = Literal["env", "registry"]


@dataclass(frozen=True)
class CurrentShare:
    """A percentage (0-100) and where it comes from."""

    percent: float
    source: Source

    def __str__(self) -> str:
        return f"{self.percent:g} % ({self.source})"


@dataclass(frozen=True)
class Shares:
    """The shares of one model's canary and shadow; None where none is configured."""

    canary: CurrentShare | None = None
    shadow: CurrentShare | None = None

    def __str__(self) -> str:
        return f"canary {self.canary or 'none'}, shadow {self.shadow or 'none'}"


class ShareReader:
    """Reads the shares from a model's tags; an invalid tag counts as 0 and is logged once per
    value, not at every refresh."""

    def __init__(self, canary: Share | None, shadow: Share | None) -> None:
        self._canary = canary
        self._shadow = shadow
        self._reported: set[tuple[str, str, str]] = set()

    def read(self, name: str, tags: Mapping[str, str]) -> Shares:
        return Shares(self._one(name, self._canary, CANARY_TAG, tags),
                      self._one(name, self._shadow, SHADOW_TAG, tags))

    def _one(self, name: str, share: Share | None, tag: str,
             tags: Mapping[str, str]) -> CurrentShare | None:
        if share is None:
            return None
        if share.percent is not None:
            return CurrentShare(share.percent, "env")
        raw = tags.get(tag)
        if raw is None:
            return CurrentShare(share.untagged, "registry")
        try:
            return CurrentShare(parse_percent(raw), "registry")
        except ValueError:
            # A share nobody meant is not taken: 0 until the tag is mended.
            if (name, tag, raw) not in self._reported:
                self._reported.add((name, tag, raw))
                logger.warning("Tag %s of %s is %r, not a percentage from 0 to 100: taking 0 "
                               "until it is mended", tag, name, raw[:40])
            return CurrentShare(0.0, "registry")
