"""`mlflow-hotswap-receiver` / `python -m receiver`: logging, settings, then uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from receiver.app import create_app
from receiver.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlflow-hotswap-receiver",
        description="Serve the MLflow model a stage or alias points to; hot-swap it on change. "
                    "Configured by MLFLOW_TRACKING_URI, MODEL_NAME, MODEL_STAGE, MODEL_ALIAS, ...")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"mlflow-hotswap-receiver: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                access_log=args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
