"""Cost to the registry (`python -m bench --parts 5`).

1. Latency of the stage-transition REST call through the plugin against the plain store, with
   receivers up, down (connection refused) and hung (they accept the connection and never
   answer). Several `mlflow server`s share one database and take the calls in turn, so every
   configuration sees the same database at the same moment.
2. Does the cost grow with the registry? In process, on one SQLite database: a transition with
   `archive_existing_versions=True` through the plain SqlAlchemyStore and through the plugin's
   store, call by call in turn, on a model with 10 and with 10,000 versions. The plugin's cost
   is its look-up before the transition (the promoted version and the holders of the stage) and
   queueing the events; delivery is asynchronous and waited for outside the timed call.
3. What one receiver's refresh asks of MLflow: HTTP requests and time per refresh, for a
   receiver following Production alone, with a canary and a shadow, and with a pre-warmed stage
   too; one `get_registered_model` (now) against one look-up per reference (before).

    python -m bench.registry_cost [--smoke]     # measures 2 and 3, without the bench's stack
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import requests

from bench.config import Config
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, SECRET, Stack
from bench.stats import ms, percentile
from examples.processes import free_port, start_mlflow_server, wait_until
from tests.support.bulk import bulk_versions
from tests.support.capture import capture_server
from tests.support.registry import light_versions

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
        "Up: the two receivers the other parts use, which re-resolve on every notification against "
        "this same one-worker MLflow server on the same 2 cores, so their lookups compete "
        "with the next call; 'answer 202' isolates the plugin itself. Down: two "
        "closed ports (refused, retried with back-off). Hung: a socket that never accepts "
        "(each delivery waits out HOTSWAP_TIMEOUT=5 s).",
    ]
    add_scaling(result, cfg.smoke)
    add_refresh_calls(result, stack.tracking_uri, cfg.smoke)
    return result


# -- 2. cost against the size of the registry --------------------------------------------------

SIZES = (10, 10_000)
GOAL = 1.5  # plugin p50 / plain p50, at every size


def add_scaling(result: PartResult, smoke: bool) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hotswap-registry-cost-") as workdir:
        for size, timings in scaling(Path(workdir), smoke).items():
            plain = percentile(timings["plain store"], 50)
            plugin = percentile(timings["plugin"], 50)
            ratio = plugin / plain
            result.add(f"archive transition at {size:,} versions: plugin / plain store (p50)",
                       f"{ratio:.2f}x", f"<= {GOAL}x", ratio <= GOAL)
            for name, values in timings.items():
                rows.append([f"{size:,}", name, str(len(values)), ms(percentile(values, 50)),
                             ms(percentile(values, 95)),
                             f"{percentile(values, 50) / plain:.2f}x"])
    result.tables.append(table(["versions", "registry store", "calls", "p50", "p95",
                                "p50 / plain"], rows))
    result.notes.append(
        "Scaling: `transition_model_version_stage(..., archive_existing_versions=True)` in "
        "process on one SQLite file, the plain `SqlAlchemyStore` and the plugin's store (one "
        "target answering 202, in another process) taking calls in turn; each call promotes "
        "one of two versions to Production and so archives the other. Versions are inserted "
        "with one multi-row INSERT. "
        "The plugin hears the stage changes MLflow makes (no query of its own); 'fallback' is "
        "its path for an MLflow it cannot hear (one query on the model's rows before the "
        "transition); 'listing every version' is its former look-up (search_model_versions "
        "over the whole model), timed on fewer calls. The database is in /dev/shm where there "
        "is one, so no fsync hides the difference.")


def scaling(workdir: Path, smoke: bool) -> dict[int, dict[str, list[float]]]:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    from mlflow_hotswap_plugin.notifier import Notifier
    from mlflow_hotswap_plugin.settings import Settings
    from mlflow_hotswap_plugin.store import HotswapRegistryStore

    calls, warmup = (10, 2) if smoke else (200, 10)
    legacy_calls = 0 if smoke else 5  # seconds per call at 10,000 versions
    # In memory where there is a /dev/shm: a disk's fsync would hide the plugin's own cost.
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="hotswap-registry-cost-",
                                     dir=shm if shm.is_dir() else workdir) as db_dir:
        uri = f"sqlite:///{Path(db_dir) / 'registry.db'}"
        with answering_target() as url:
            plain = SqlAlchemyStore(uri)
            notifier = Notifier(Settings(targets=(url,)))
            plugin: Any = HotswapRegistryStore(f"hotswap+{uri}", notifier=notifier)
            looking_up: Any = HotswapRegistryStore(f"hotswap+{uri}", notifier=notifier)
            looking_up._recording = False
            legacy: Any = HotswapRegistryStore(f"hotswap+{uri}", notifier=notifier)
            legacy._recording = False
            legacy._sql_stages = lambda name, version, stage: legacy._searched_stages(
                name, str(version), stage)
            found: dict[int, dict[str, list[float]]] = {}
            for size in SIZES:
                name = f"cost-{size}"
                bulk_versions(plain, name, size)
                stores = {"plain store": plain, "plugin": plugin,
                          "plugin, fallback: one look-up query first": looking_up}
                timings = _alternate(stores, name, warmup, calls, notifier)
                if legacy_calls:
                    before = "plugin, listing every version (before)"
                    timings[before] = _alternate({before: legacy}, name, 1, legacy_calls,
                                                 notifier)[before]
                found[size] = timings
    return found


def _alternate(stores: dict[str, Any], name: str, warmup: int, calls: int,
               notifier: Any) -> dict[str, list[float]]:
    """Time `calls` archive transitions per store, the stores taking turns (order alternating);
    each promotes version 1 or 2, archiving the other."""
    timings: dict[str, list[float]] = {label: [] for label in stores}
    for i in range(warmup + calls):
        turn = list(stores.items())
        for label, store in turn if i % 2 == 0 else reversed(turn):
            started = time.perf_counter()
            _promote(store, name, str(1 + i % 2))
            elapsed = time.perf_counter() - started
            notifier.flush(10)  # deliveries done before the next timed call
            if i >= warmup:
                timings[label].append(elapsed)
    return timings


# In a process of its own, so that answering never competes with the timed calls for the GIL.
ANSWERING = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@contextmanager
def answering_target() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", ANSWERING, str(port)])
    try:
        url = f"http://127.0.0.1:{port}/webhooks/mlflow"
        wait_until(lambda: requests.post(url, timeout=1).status_code == 202, timeout=30,
                   message="the answering target")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _promote(store: Any, name: str, version: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated in MLflow, not in our contract
        store.transition_model_version_stage(name, version, "Production", True)


# -- 3. what one refresh asks of MLflow --------------------------------------------------------

REFRESH_MODEL = "refresh-cost"
REFRESH_SETUPS = {
    "Production": {},
    "Production; canary and shadow @challenger": {"MODEL_CANARY": "@challenger",
                                                  "MODEL_SHADOW": "@challenger"},
    "Production; pre-warm Staging; canary @challenger; shadow @shadow": {
        "MODEL_PREWARM": "Staging", "MODEL_CANARY": "@challenger:10",
        "MODEL_SHADOW": "@shadow", "MODEL_CACHE_SIZE": "8"},
}


def add_refresh_calls(result: PartResult, tracking_uri: str, smoke: bool) -> None:
    from mlflow import MlflowClient

    from receiver.registry import Registry
    from receiver.settings import Settings

    refreshes = 3 if smoke else 50
    client = MlflowClient(tracking_uri)
    _refresh_model(tracking_uri, client)
    rows = []
    for label, env in REFRESH_SETUPS.items():
        settings = Settings.from_env({"MLFLOW_TRACKING_URI": tracking_uri,
                                      "MODEL_NAME": REFRESH_MODEL, **env})
        references = (settings.followed, *settings.rollout_references)
        registry = Registry(settings)
        before = _per_refresh(partial(_one_look_up_per_reference, client, references),
                              refreshes)
        after = _per_refresh(partial(registry.snapshot, REFRESH_MODEL), refreshes)
        registry.close()
        rows.append([label, str(len(references)), f"{before[0]:g}", f"{after[0]:g}",
                     ms(before[1]), ms(after[1])])
        result.add(f"HTTP requests to MLflow per refresh ({label})", f"{after[0]:g}", "1",
                   after[0] == 1)
    result.tables.append(table(["receiver follows", "references", "requests before",
                                "requests now", "p50 before", "p50 now"], rows))
    result.notes.append(
        f"Per refresh of one model, {refreshes} refreshes each, against the bench's MLflow "
        "server: HTTP requests counted in the receiver's process (MLflow's REST client), and "
        "the refresh's time. Before: one look-up per reference (get_latest_versions for a "
        "stage, get_model_version_by_alias for an alias; MLflow 3's client precedes each "
        "get_latest_versions with a get_registered_model, to check the name is not a "
        "prompt's). Now: "
        "one get_registered_model, whose answer holds the aliases, the newest version of each "
        "stage and the tags (the canary's share).")


def _refresh_model(tracking_uri: str, client: Any) -> None:
    """Versions 1 in Production, 2 in Staging and @shadow, 3 @challenger; a canary share tag."""
    light_versions(tracking_uri, REFRESH_MODEL, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stages are deprecated in MLflow, not in our contract
        client.transition_model_version_stage(REFRESH_MODEL, "1", "Production")
        client.transition_model_version_stage(REFRESH_MODEL, "2", "Staging")
    client.set_registered_model_alias(REFRESH_MODEL, "challenger", "3")
    client.set_registered_model_alias(REFRESH_MODEL, "shadow", "2")
    client.set_registered_model_tag(REFRESH_MODEL, "hotswap.canary_percent", "10")


def _one_look_up_per_reference(client: Any, references: tuple[Any, ...]) -> None:
    """The receiver's refresh before: one registry look-up per reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reference in references:
            if reference.kind == "alias":
                client.get_model_version_by_alias(REFRESH_MODEL, reference.name)
            else:
                client.get_latest_versions(REFRESH_MODEL, stages=[reference.name])


def _per_refresh(refresh: Callable[[], object], refreshes: int) -> tuple[float, float]:
    """HTTP requests per refresh and the p50 of its time."""
    from mlflow.utils import rest_utils

    counted = 0
    real = rest_utils.http_request

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal counted
        counted += 1
        return real(*args, **kwargs)

    timings = []
    with contextlib.ExitStack() as undo:
        rest_utils.http_request = counting  # every REST store call goes through it
        undo.callback(setattr, rest_utils, "http_request", real)
        refresh()  # warm-up: connections made
        counted = 0
        for _ in range(refreshes):
            started = time.perf_counter()
            refresh()
            timings.append(time.perf_counter() - started)
    return counted / refreshes, percentile(timings, 50)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.registry_cost",
                                     description="The plugin's cost against "
                                                 "the registry's size; MLflow requests per "
                                                 "receiver refresh")
    parser.add_argument("--smoke", action="store_true", help="a few calls per size")
    args = parser.parse_args(argv)
    result = PartResult(5, "Cost to the registry")
    add_scaling(result, args.smoke)
    with tempfile.TemporaryDirectory(prefix="hotswap-refresh-cost-") as workdir:
        server = start_mlflow_server(Path(workdir))
        try:
            add_refresh_calls(result, server.url, args.smoke)
        finally:
            server.stop()
    for figure in result.figures:
        print(f"{figure.name}: {figure.value}  [target {figure.target}: {figure.verdict}]")
    print(*result.tables, sep="\n\n")
    return 0 if all(f.met for f in result.figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
