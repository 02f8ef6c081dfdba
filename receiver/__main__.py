"""`mlflow-hotswap-receiver` / `python -m receiver`: logging, settings, then uvicorn."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import ipaddress
import logging
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import uvicorn

from mlflow_hotswap_plugin import env
from receiver import connections, redact, worker, workers
from receiver.app import create_app
from receiver.host import WorkerSeat
from receiver.preload import Preload
from receiver.registry import LoadedModel
from receiver.settings import Settings, SettingsError, parse_workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlflow-hotswap-receiver",
        description="Serve the MLflow model a stage or alias points to; hot-swap it on change.\n"
                    "Configured by the environment variables listed below.",
        epilog=environment_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--workers", metavar="N",
                        help="worker processes sharing the port, or 'auto' (one per usable "
                             "core); default HOTSWAP_WORKERS, else 1")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact.install_log_filter()
    try:
        settings = Settings.from_env()
        if args.workers is not None:
            settings = dataclasses.replace(settings, workers=parse_workers(args.workers))
    except SettingsError as exc:
        print(f"mlflow-hotswap-receiver: {exc}", file=sys.stderr)
        return 2
    for warning in exposure_warnings(args.host, settings):
        logging.getLogger("receiver").warning(warning)
    options = {"log_level": args.log_level, "access_log": args.access_log,
               "log_config": _uvicorn_log_config(),
               "http": connections.protocol(connections.Limits.of(settings))}
    if settings.workers > 1:
        return _supervise(settings, options, args.host, args.port)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, **options)
    return 0


def _supervise(settings: Settings, options: dict[str, Any], host: str, port: int) -> int:
    # Bound first, so a port in use fails at once, not after the load; connections made
    # while the supervisor loads wait for the workers.
    listener = workers.listen(host, port)
    logging.getLogger("receiver").info("Serving on %s:%d with %d workers", host, port,
                                       settings.workers)
    preload = Preload(settings)
    try:
        serve = functools.partial(_serve_worker, settings, options, preload.load())
        return workers.Supervisor(settings.workers, listener, serve,
                                  settings.update_interval).run()
    finally:
        preload.close()


def _serve_worker(settings: Settings, options: dict[str, Any],
                  preloaded: tuple[LoadedModel, ...], seat: WorkerSeat,
                  listener: socket.socket, metrics_dir: Path) -> int:
    return worker.serve(settings, preloaded, seat, listener, metrics_dir, options)


def environment_help(width: int = 100) -> str:
    """Each variable the receiver reads: its default and its meaning, from its declaration."""
    lines = ["environment variables:"]
    for row in env.rows(Settings):
        default = row.default.replace("`", "")
        lines.append(f"  {row.variable} ({'' if default == 'required' else 'default: '}{default})")
        lines += textwrap.wrap(row.help.replace("`", ""), width, initial_indent=" " * 6,
                               subsequent_indent=" " * 6)
    return "\n".join(lines)


def _uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging setup, with every handler scrubbing credentials."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"scrub": {"()": "receiver.redact.ScrubFilter"}}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "scrub"]
    return config


def exposure_warnings(host: str, settings: Settings) -> list[str]:
    """What anyone who can reach `host` could do that the settings do not prevent."""
    if _loopback(host):
        return []
    warnings = []
    secret = env.declared(settings, "webhook_secret").variable
    token = env.declared(settings, "admin_token").variable
    if not settings.webhook_secret:
        warnings.append(
            f"SECURITY: listening on {host} with no {secret}: anyone who can "
            f"reach this port can make the receiver ask MLflow again, as often as they like. "
            f"Set the same secret here and on the MLflow server.")
    if not settings.admin_token:
        warnings.append(
            f"SECURITY: listening on {host} with no {token}: anyone who can reach "
            f"this port can call POST /models/reload. Set a token.")
    return warnings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a hostname: it may resolve anywhere
        return False


if __name__ == "__main__":
    sys.exit(main())
