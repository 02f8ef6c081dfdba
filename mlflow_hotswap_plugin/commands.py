"""`mlflow-hotswap`: one command, three subcommands.

- `status`: what every receiver replica serves;
- `rollout`: drive a canary step by step through the registry, promote it or roll it back;
- `test-event`: send a test notification to the configured receivers (also installed as
  `mlflow-hotswap-test-event`).

Exit codes: 0 success (promoted, converged), 1 rolled back, refused or not converged, 2 bad usage.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence

from mlflow_hotswap_plugin import cli

USAGE = 2


def _steps(text: str) -> tuple[float, ...]:
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write percentages like 5,25,50,100") from None
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: percentages above 0, at most 100, increasing")
    return steps


def _bounded(low: float, high: float = math.inf) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is out of range ({low:g} to {high:g})")
        return value
    return parse


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def _urls(text: str) -> list[str]:
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls or not all(url.startswith(("http://", "https://")) for url in urls):
        raise argparse.ArgumentTypeError(f"{text!r}: write http(s)://host:port[,...]")
    return urls


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mlflow-hotswap", description=__doc__.split("\n")[0])
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="one row per receiver replica")
    status.add_argument("--receivers", type=_urls, required=True, metavar="URL[,URL...]",
                        help="receiver URLs; a name with several addresses is asked at each")
    status.add_argument("--json", action="store_true", help="rows as JSON")
    status.add_argument("--wait-converged", type=_bounded(0), metavar="SECONDS",
                        help="wait until every replica serves the same versions and shares; "
                             "exit 1 if not by then")
    _rollout_arguments(commands.add_parser(
        "rollout", help="step a canary through the fleet; promote it or roll it back"))
    commands.add_parser("test-event", add_help=False,
                        help="send a test event to HOTSWAP_TARGETS (see test-event --help)")
    return top


def _rollout_arguments(rollout: argparse.ArgumentParser) -> None:
    add = rollout.add_argument
    add("name", help="the registered model")
    add("--canary", required=True, metavar="REF", help="@alias or stage of the candidate")
    add("--steps", type=_steps, default=(5.0, 25.0, 50.0, 100.0), metavar="P,P,...",
        help="canary shares in percent (default: 5,25,50,100)")
    add("--step-seconds", type=_bounded(0), default=60.0, help="hold of each step (default: 60)")
    add("--min-requests", type=_count, default=100,
        help="canary requests each step must see across the fleet (default: 100)")
    add("--max-wait", type=_bounded(0), metavar="SECONDS",
        help="longest a step may wait for replicas or requests (default: 3 x --step-seconds, "
             "at least --step-seconds + 60)")
    add("--max-error-rate", type=_bounded(0, 1), default=0.01, help="(default: 0.01)")
    add("--max-latency-ratio", type=_bounded(0), default=1.5,
        help="canary p99 / primary p99 (default: 1.5)")
    add("--min-agreement", type=_bounded(0, 1), default=0.95,
        help="with a shadow of the canary's version (default: 0.95)")
    promote = rollout.add_mutually_exclusive_group()
    promote.add_argument("--promote-alias", metavar="ALIAS", help="e.g. champion")
    promote.add_argument("--promote-stage", metavar="STAGE",
                         help="e.g. Production (older versions there are archived)")
    source = rollout.add_mutually_exclusive_group()
    source.add_argument("--receivers", type=_urls, metavar="URL[,URL...]",
                        help="read each replica's /metrics")
    source.add_argument("--prometheus", metavar="URL", help="query this Prometheus instead")
    mode = rollout.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue where the tag stands")
    mode.add_argument("--abort", action="store_true", help="canary share 0 now, and record it")
    mode.add_argument("--dry-run", action="store_true", help="print the plan and exit")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["test-event"]:
        return cli.main(args_list[1:])
    top = parser()
    try:
        args = top.parse_args(args_list)
        if args.command == "rollout":
            _check_rollout(top, args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else USAGE
    if args.command == "status":
        from mlflow_hotswap_plugin.fleet import status
        return status.run(args.receivers, args.json, args.wait_converged, sys.stdout)
    from mlflow_hotswap_plugin.fleet import launch
    return launch.run(args)


def _check_rollout(top: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot say: a run needs a promotion target and a metrics source."""
    if not (args.promote_alias or args.promote_stage):
        top.error("rollout needs --promote-alias ALIAS or --promote-stage STAGE")
    if not (args.abort or args.dry_run or args.receivers or args.prometheus):
        top.error("rollout needs --receivers URL[,URL...] or --prometheus URL")


if __name__ == "__main__":
    sys.exit(main())
