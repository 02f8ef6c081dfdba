"""`mlflow-hotswap rollout`: from the command line's options to a running Controller, and the
other ways in: `--dry-run` (print the plan), `--abort` (share 0 now), `--resume`."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TextIO

from mlflow_hotswap_plugin.fleet.analysis import Limits
from mlflow_hotswap_plugin.fleet.controller import ROLLED_BACK, Controller, Interrupted
from mlflow_hotswap_plugin.fleet.plan import Plan
from mlflow_hotswap_plugin.fleet.progress import Progress
from mlflow_hotswap_plugin.fleet.registry import RegistryError, RestRegistry
from mlflow_hotswap_plugin.fleet.sources import MetricSource, PrometheusMetrics, ReceiverMetrics
from mlflow_hotswap_plugin.fleet.state import (
    ROLLOUT_TAG,
    LeaseKeeper,
    RegistryClient,
    RolloutTags,
    percent_text,
    resolve,
    resumable_at,
)
from mlflow_hotswap_plugin.fleet.steps import StepRunner

USAGE = 2


def make_plan(args: argparse.Namespace, client: RegistryClient) -> Plan | str:
    """The plan, or why there is nothing to roll out."""
    version = resolve(client, args.name, args.canary)
    if version is None:
        return f"{args.canary} of {args.name} points to no version"
    target = f"@{args.promote_alias}" if args.promote_alias else args.promote_stage
    champion = resolve(client, args.name, target)
    if champion == version:
        return f"{args.canary} is version {version}, which {target} already is"
    limits = Limits(args.max_error_rate, args.max_latency_ratio, args.min_agreement,
                    args.min_requests)
    max_wait = args.max_wait if args.max_wait is not None else max(
        3 * args.step_seconds, args.step_seconds + 60)
    return Plan(args.name, args.canary, version, champion, args.steps, args.step_seconds,
                max_wait, limits, args.promote_alias, args.promote_stage,
                poll_seconds=min(0.25, max(0.05, args.step_seconds / 4)))


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        client = RestRegistry.from_environment()
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return USAGE
    try:
        return _run(args, client, out)
    except RegistryError as exc:
        print(f"stopped: the registry failed: {exc}. The version's {ROLLOUT_TAG} tag says "
              "where the rollout stood: run again with --resume, or end it with --abort",
              file=sys.stderr)
        return ROLLED_BACK


def _run(args: argparse.Namespace, client: RegistryClient, out: TextIO) -> int:
    plan = make_plan(args, client)
    if isinstance(plan, str):
        print(f"refused: {plan}", file=sys.stderr)
        return ROLLED_BACK
    progress = Progress(out)
    if args.dry_run:
        for line in plan.describe():
            progress.line(line)
        return 0
    tags = RolloutTags(client, plan.name, plan.version)
    lease = LeaseKeeper(client, plan.name)
    if args.abort:
        return abort(plan, tags, lease, progress)
    progress.line(plan.describe()[0])
    first = _first_step(args.resume, plan, tags)
    if isinstance(first, str) or (refusal := _take_lease(lease, args.resume)):
        print(f"refused: {first if isinstance(first, str) else refusal}", file=sys.stderr)
        return ROLLED_BACK
    controller = Controller(plan, tags, lease, progress)
    runner = StepRunner(plan, _metrics(args), progress, controller.tick)
    with _signals_interrupt():
        return controller.run(runner, first)


def abort(plan: Plan, tags: RolloutTags, lease: LeaseKeeper, progress: Progress) -> int:
    tags.set_share(0)
    at = resumable_at(tags.recorded())
    where = f" at {percent_text(at)} %" if at is not None else ""
    tags.record(f"aborted{where}: by request (--abort)")
    lease.clear()
    progress.line(f"aborted{where}: canary share 0; {plan.target} untouched")
    return ROLLED_BACK


def _first_step(resume: bool, plan: Plan, tags: RolloutTags) -> int | str:
    if not resume:
        return 0
    recorded = tags.recorded()
    at = resumable_at(recorded)
    if at is None:
        return f"nothing to resume: version {plan.version}'s rollout tag is {recorded!r}"
    later = [i for i, step in enumerate(plan.steps) if step >= at]
    return later[0] if later else len(plan.steps) - 1


def _take_lease(lease: LeaseKeeper, resume: bool) -> str | None:
    """None once the lease is ours. A resume waits out a lease (a crashed controller's) once;
    a lease renewed meanwhile belongs to a live controller."""
    other = lease.held_by_other()
    if other is not None and resume:
        time.sleep(max(0.0, other.expires - lease.clock()) + 0.1)
        other = lease.held_by_other()
    if other is not None:
        return f"another rollout holds the lease: {other.text()}"
    if not lease.take():
        return "another rollout took the lease at the same moment"
    return None


def _metrics(args: argparse.Namespace) -> MetricSource:
    if args.prometheus:
        return PrometheusMetrics(args.prometheus)
    return ReceiverMetrics(args.receivers)


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (a Job deleted, a pod evicted) and Ctrl-C end the run as Interrupted."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
