"""Where the examples run when no --runner is given: in this process, with no download.

Beam's `DirectRunner` first tries its Prism runner, which downloads a Go binary at run time,
and falls back to Python's BundleBasedDirectRunner for streaming, which runs no splittable
DoFn (PeriodicImpulse, file watching) in streaming mode. Naming the DirectRunner's in-process
FnApiRunner avoids both: it runs the unbounded sources here in real time, bundle by bundle.
"""

from __future__ import annotations

from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions

LOCAL_RUNNER = "FnApiRunner"


def local_options(beam_args: Sequence[str] = ()) -> PipelineOptions:
    return PipelineOptions([f"--runner={LOCAL_RUNNER}", *beam_args])
