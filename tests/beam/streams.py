"""Drive examples/beam/score_stream.py as a user would: transaction files in, score files out."""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from examples.processes import Process, spawn, wait_until
from tests.support.models import training_frame

ROOT = Path(__file__).resolve().parents[2]


class StreamFiles:
    """The input and output folders of one score_stream run."""

    def __init__(self, folder: Path) -> None:
        self.inputs = folder / "in"
        self.outputs = folder / "out"
        self.inputs.mkdir(parents=True)
        self.outputs.mkdir(parents=True)
        self.sent: list[int] = []
        self.rows: dict[int, dict[str, float]] = {}

    @property
    def end(self) -> Path:
        return self.inputs / "END"

    def send(self, count: int) -> list[int]:
        """Write `count` new transactions as one file (whole, by rename); their ids."""
        first = len(self.sent)
        frame, _ = training_frame(seed=1000 + first, rows=count)
        ids = list(range(first, first + count))
        lines = []
        for row_id, row in zip(ids, frame.to_dict("records"), strict=True):
            self.rows[row_id] = row
            lines.append(json.dumps({"id": row_id, **row}))
        temporary = self.inputs.parent / f"{first:06d}.tmp"
        temporary.write_text("\n".join(lines) + "\n")
        os.replace(temporary, self.inputs / f"{first:06d}.jsonl")
        self.sent.extend(ids)
        return ids

    def scored(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for path in sorted(self.outputs.glob("*.jsonl")):
            records.extend(json.loads(line) for line in path.read_text().splitlines() if line)
        return records

    def models_of(self, ids: list[int], timeout: float = 60) -> dict[int, str]:
        """The version that scored each of `ids`, once all are scored."""
        wanted = set(ids)

        def all_scored() -> dict[int, str] | None:
            found = {r["id"]: r["model"] for r in self.scored() if r["id"] in wanted}
            return found if len(found) == len(wanted) else None

        return wait_until(all_scored, timeout=timeout, message=f"ids {ids[0]}.. scored")

    def send_until_scored_by(self, model: str, timeout: float = 60) -> list[str]:
        """Send small files, each once the previous one is scored, until one row is scored by
        `model`; the models in the order the rows were sent."""
        seen: list[str] = []

        def scored_by_model() -> bool:
            ids = self.send(3)
            models = self.models_of(ids)
            seen.extend(models[i] for i in ids)
            return model in models.values()

        wait_until(scored_by_model, timeout=timeout, interval=0.05,
                   message=f"a row scored by {model}")
        return seen

    def each_scored_once(self) -> Counter[int]:
        return Counter(record["id"] for record in self.scored())


def start_stream(files: StreamFiles, tracking_uri: str, model: str, *args: str,
                 env: dict[str, str] | None = None) -> Process:
    argv = [sys.executable, "-m", "examples.beam.score_stream", "--tracking-uri", tracking_uri,
            "--model-name", model, "--stage", "Production", "--input",
            str(files.inputs / "*.jsonl"), "--end", str(files.end),
            "--output", str(files.outputs), *args]
    return spawn("score_stream", argv, {**os.environ, **(env or {})},
                 files.inputs.parent / "score_stream.log", port=0, cwd=ROOT)
