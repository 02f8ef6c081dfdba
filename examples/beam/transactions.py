"""Transactions in, scores out, as files: the stream source and sink of score_stream.py where
no Pub/Sub or Kafka is at hand (the DirectRunner here; any runner with a shared filesystem).

`FollowJsonLines(pattern, end=...)` reads JSON-lines files matching `pattern` in name order as
they appear, and ends once the file `end` exists and every file before it was read. Files must
appear whole and sort in arrival order: write each one under another name (or elsewhere), then
rename it to, say, `00042.jsonl`. `WriteJsonLines(folder)` writes each bundle's records to a
file of its own, the same way (a temporary name, then a rename).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration, Timestamp

# The restriction counts files in name order; "all the files there will ever be".
_UNBOUNDED = 2**62


class FollowJsonLines(beam.PTransform):
    def __init__(self, pattern: str, end: str, poll: float = 0.2) -> None:
        super().__init__()
        self._pattern, self._end, self._poll = pattern, end, poll

    def expand(self, pbegin: Any) -> Any:
        return (pbegin
                | beam.Impulse()
                | beam.ParDo(_FollowFiles(self._pattern, self._end, self._poll)))


class _FileIndexes(RestrictionProvider):
    def initial_restriction(self, element: Any) -> OffsetRange:
        return OffsetRange(0, _UNBOUNDED)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: Any, restriction: OffsetRange) -> int:
        return 1


# Beam reads a splittable DoFn's restriction and watermark from its parameters' defaults.
_FILES = beam.DoFn.RestrictionParam(_FileIndexes())
_WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())


class _FollowFiles(beam.DoFn):
    def __init__(self, pattern: str, end: str, poll: float) -> None:
        self._pattern, self._end, self._poll = pattern, end, poll

    @beam.DoFn.unbounded_per_element()
    def process(self, unused_impulse: Any,
                tracker: Any = _FILES,
                watermark: Any = _WATERMARK) -> Iterator[Any]:
        # The end marker is looked at before the listing, so no file listed after it is missed.
        ended = FileSystems.exists(self._end)
        paths = sorted(m.path for m in FileSystems.match([self._pattern])[0].metadata_list
                       if m.path != self._end)
        position = tracker.current_restriction().start
        while position < len(paths):
            if not tracker.try_claim(position):
                return
            with FileSystems.open(paths[position]) as lines:
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            position += 1
        watermark.set_watermark(Timestamp.now())
        if ended:
            tracker.try_claim(tracker.current_restriction().stop - 1)
            return
        tracker.defer_remainder(Duration(seconds=self._poll))


class WriteJsonLines(beam.DoFn):
    """Each bundle's records into `<folder>/<bundle id>.jsonl`, renamed into place whole."""

    def __init__(self, folder: str) -> None:
        self._folder = folder.rstrip("/")
        self._records: list[dict[str, Any]] = []

    def start_bundle(self) -> None:
        self._records = []

    def process(self, record: dict[str, Any]) -> None:
        self._records.append(record)

    def finish_bundle(self) -> None:
        if not self._records:
            return
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        temporary = f"{self._folder}/.{name}.tmp"
        with FileSystems.create(temporary) as out:
            for record in self._records:
                out.write((json.dumps(record) + "\n").encode())
        FileSystems.rename([temporary], [f"{self._folder}/{name}.jsonl"])
        self._records = []
