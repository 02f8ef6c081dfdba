"""Part 5: cost to the registry. Latency of the stage-transition REST call through the plugin
against the plain store, with receivers up, down (connection refused) and hung (they accept
the connection and never answer). Several `mlflow server`s share one database and take the
calls in turn, so every configuration sees the same database at the same moment."""

from __future__ import annotations

import socket
import time
from contextlib import closing
from typing import Any

import requests

from bench.config import Config
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, SECRET, Stack
from bench.stats import ms, percentile
from examples.processes import free_port
from tests.support.capture import capture_server

PATH = "/api/2.0/mlflow/model-versions/transition-stage"


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(5, "Cost to the registry")
    refused = [f"http://127.0.0.1:{free_port()}/webhooks/mlflow" for _ in range(2)]
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1024)  # never accepted: connections wait in the backlog, requests time out
    hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}/webhooks/mlflow"
    with closing(hung), capture_server(secret=SECRET) as answering:
        plugin = f"hotswap+{stack.backend_uri}"
        specs = {
            "plain store": (stack.backend_uri, {}),
            "plugin, receivers down": (plugin, {"HOTSWAP_TARGETS": ",".join(refused),
                                                "HOTSWAP_WEBHOOK_SECRET": SECRET}),
        }
        if not cfg.smoke:
            # Targets that answer 202 at once and never call MLflow back: the plugin's own
            # cost, without the receivers' re-resolves landing on the same server and cores.
            specs["plugin, targets answer 202 (no re-resolve)"] = (
                plugin, {"HOTSWAP_TARGETS": answering.url, "HOTSWAP_WEBHOOK_SECRET": SECRET})
            specs["plugin, receivers hung"] = (plugin, {"HOTSWAP_TARGETS": hung_url,
                                                        "HOTSWAP_WEBHOOK_SECRET": SECRET})
        servers = stack.start_extra_mlflow(specs)
        urls = {"plugin, receivers up": stack.tracking_uri,
                **{name: server.url for name, server in servers.items()}}
        # A version nobody serves, moved between Staging and None: the receivers are told and
        # re-resolve (as they would in production), but nothing is loaded.
        version = stack.versions[-1]
        sessions = {name: requests.Session() for name in urls}
        timings: dict[str, list[float]] = {name: [] for name in urls}
        stages = ("Staging", "None")
        warmup = 3
        for i in range(cfg.registry_calls + warmup):
            names = list(urls) if i % 2 == 0 else list(reversed(urls))
            for name in names:
                body: dict[str, Any] = {"name": MODEL_NAME, "version": version,
                                        "stage": stages[i % 2],
                                        "archive_existing_versions": False}
                started = time.perf_counter()
                answer = sessions[name].post(urls[name] + PATH, json=body, timeout=30)
                elapsed = time.perf_counter() - started
                answer.raise_for_status()
                if i >= warmup:
                    timings[name].append(elapsed)
        for server in servers.values():
            server.stop()
            stack.extra.remove(server)
    plain = percentile(timings["plain store"], 50)
    rows = []
    for name, values in timings.items():
        p50 = percentile(values, 50)
        rows.append([name, str(len(values)), ms(p50), ms(percentile(values, 95)),
                     ms(max(values)), "" if name == "plain store" else ms(p50 - plain)])
        if name != "plain store":
            result.add(f"{name}: added p50 latency", ms(p50 - plain), "< 5 ms",
                       p50 - plain < 0.005)
    result.tables.append(table(["registry", "calls", "p50", "p95", "max", "added at p50"], rows))
    result.notes += [
        f"`POST {PATH}` with `requests`, one kept-alive session per server; the servers take "
        "turns call by call (order alternating), all on the same SQLite database.",
        "Up: the two receivers of parts 1-3, which re-resolve on every notification against "
        "this same one-worker MLflow server on the same 2 cores, so their lookups compete "
        "with the next call; 'answer 202' isolates the plugin itself. Down: two "
        "closed ports (refused, retried with back-off). Hung: a socket that never accepts "
        "(each delivery waits out HOTSWAP_TIMEOUT=5 s).",
    ]
    return result
