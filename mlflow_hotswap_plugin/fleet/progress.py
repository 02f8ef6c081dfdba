"""What a person watching a rollout sees: one line per event; on a terminal, a live bar under
them while a step is held (plain lines only when the output is a log)."""

from __future__ import annotations

from typing import TextIO

BAR_WIDTH = 24


class Progress:
    def __init__(self, out: TextIO, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self._bar_shown = False

    def line(self, text: str) -> None:
        self._clear_bar()
        self.out.write(text + "\n")
        self.out.flush()

    def bar(self, label: str, done: float, detail: str) -> None:
        """`done` from 0 to 1; drawn over itself, on a terminal only."""
        if not self.live:
            return
        filled = round(max(0.0, min(1.0, done)) * BAR_WIDTH)
        self.out.write(f"\r\x1b[2K{label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                       f"{detail}")
        self.out.flush()
        self._bar_shown = True

    def _clear_bar(self) -> None:
        if self._bar_shown:
            self.out.write("\r\x1b[2K")
            self._bar_shown = False
