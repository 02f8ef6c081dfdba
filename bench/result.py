"""What a part hands to the report: figures next to their targets, tables, notes, commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    name: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target, or not applicable

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**missed**", None: ""}[self.met]


@dataclass
class PartResult:
    number: int
    title: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # Markdown, rendered as given
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    ran_at: str = ""  # UTC, when the part started
    load: str = ""  # the 1-minute load average at its start and its end

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartResult:
        """A part as `python -m bench --json` wrote it."""
        figures = [Figure(**figure) for figure in data.get("figures", [])]
        return cls(**{**data, "figures": figures})

    def add(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.figures.append(Figure(name, value, target, met))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
