"""`mlflow-hotswap-test-event`: send one test event to every configured receiver and report.

Run it with the MLflow server's environment (HOTSWAP_TARGETS, HOTSWAP_WEBHOOK_SECRET, ...).
Each address a target resolves to gets its own line: whether the receiver accepted the event and
whether it accepted the signature (receivers answer 401 to a bad or missing one).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mlflow_hotswap_plugin import events, targets
from mlflow_hotswap_plugin.delivery import Outcome, Sender, deliver
from mlflow_hotswap_plugin.settings import ConfigError, Settings


def describe(outcome: Outcome, signed: bool) -> str:
    where = f"{outcome.target.safe_url} ({outcome.address})"
    if outcome.status is None:
        return f"{where}: unreachable after {outcome.attempts} attempt(s): {outcome.error}"
    if outcome.accepted:
        signature = "signature matched" if signed else "unsigned (HOTSWAP_WEBHOOK_SECRET not set)"
        return f"{where}: accepted (HTTP {outcome.status}), {signature}"
    if outcome.status == 401:
        return (f"{where}: rejected (HTTP 401), signature did not match: set the same "
                "HOTSWAP_WEBHOOK_SECRET on the MLflow server and the receiver")
    return f"{where}: not accepted (HTTP {outcome.status})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlflow-hotswap-test-event",
        description="Send a test event to the receivers in HOTSWAP_TARGETS and report, per "
                    "address, whether it was accepted and whether the signature matched.")
    parser.add_argument("--target", action="append", default=[], metavar="URL",
                        help="send to this URL instead of HOTSWAP_TARGETS (repeatable)")
    parser.add_argument("--model", default="mlflow-hotswap-test-event",
                        help="model name in the test event (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
        if args.target:
            settings = dataclasses.replace(settings, targets=tuple(args.target))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not settings.targets:
        print("error: no targets: set HOTSWAP_TARGETS or pass --target", file=sys.stderr)
        return 2

    sender = Sender(settings.secret, settings.timeout)
    # The shape of MLflow's own webhook test: an example of a real event type.
    event = events.alias_created(args.model, "test", "1")
    all_accepted = True
    for target in map(targets.Target.parse, settings.targets):
        try:
            addresses = targets.addresses(target, targets.resolve, settings.max_addresses)
        except (OSError, UnicodeError) as exc:
            print(f"{target.safe_url}: cannot resolve {target.host}: {exc}")
            all_accepted = False
            continue
        for address in addresses:
            outcome = deliver(sender, event, target, address, retries=0)
            print(describe(outcome, signed=settings.secret is not None))
            all_accepted = all_accepted and outcome.accepted
    return 0 if all_accepted else 1


if __name__ == "__main__":
    sys.exit(main())
