"""Registry references beside the followed one: a stage (`Staging`) or an alias (`@challenger`),
with a traffic share for the canary and the shadow. Parsing only; no MLflow, no settings.

Syntax: MODEL_PREWARM `Staging,@challenger`; MODEL_CANARY and MODEL_SHADOW `<ref>[:<percent>]`,
where a reference without a percent takes its share from a registry tag (shares.py). Errors are
ValueErrors whose message says what is wrong; settings.py names the variable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

# MLflow's stages, by the capitalisation MLflow answers with; it matches them case-insensitively.
STAGES = ("Staging", "Production", "Archived")
# MLflow's alias rule (model_registry/utils): letters, digits, `_` and `-`.
_ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")
# MLflow reserves these for version references (`models:/m@latest`, `models:/m@v3`).
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Reference:
    kind: Literal["stage", "alias"]
    name: str

    def __str__(self) -> str:
        return f"@{self.name}" if self.kind == "alias" else self.name


@dataclass(frozen=True)
class Share:
    """A reference and the percentage (0-100) of requests it takes: fixed, or None when the
    registry's tag says (read at every refresh), `untagged` while the model has no such tag."""

    reference: Reference
    percent: float | None
    untagged: float = 0.0

    def __str__(self) -> str:
        return str(self.reference) if self.percent is None else f"{self.reference}:{self.percent:g}"


def parse_reference(text: str) -> Reference:
    text = text.strip()
    if text.startswith("@"):
        alias = text[1:]
        if not _ALIAS.match(alias):
            raise ValueError(f"{text!r} is not an alias: after '@' use letters, digits, "
                             "'_' or '-'.")
        if _RESERVED_ALIAS.match(alias):
            raise ValueError(f"{text!r} is reserved by MLflow for version references.")
        return Reference("alias", alias)
    for stage in STAGES:
        if text.lower() == stage.lower():
            return Reference("stage", stage)
    raise ValueError(f"{text!r} is neither a stage ({', '.join(STAGES)}) nor an @alias.")


def parse_references(text: str) -> tuple[Reference, ...]:
    """A comma-separated list, duplicates dropped, order kept; empty text gives ()."""
    found: list[Reference] = []
    for part in text.split(","):
        if part.strip():
            reference = parse_reference(part)
            if reference not in found:
                found.append(reference)
    return tuple(found)


def parse_share(text: str, untagged: float = 0.0) -> Share:
    """`<ref>:<percent>`, a fixed share; `<ref>` alone, a share the registry's tag sets, which
    is `untagged` while there is no tag."""
    head, colon, tail = text.strip().rpartition(":")
    if not colon:
        return Share(parse_reference(text), None, untagged)
    return Share(parse_reference(head), parse_percent(tail), untagged)


def parse_percent(text: str) -> float:
    """A number from 0 to 100, in plain ASCII (float() alone also takes "nan", "1_0", "٣")."""
    try:
        if not text.strip().isascii() or "_" in text:
            raise ValueError(text)
        percent = float(text)
    except ValueError:
        raise ValueError(f"{text.strip()[:40]!r} is not a percentage (a number from 0 to 100)."
                         ) from None
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise ValueError(f"the percentage must be from 0 to 100, got {text.strip()[:40]}.")
    return percent
