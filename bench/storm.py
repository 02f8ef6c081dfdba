"""Notification storm (`python -m bench --parts 6`). Many signed notifications in about a second at
one receiver, after a real registry change it was not told of: how many registry resolves and loads
follow, and what happens to prediction latency meanwhile."""

from __future__ import annotations

import http.client
import threading
import time

from bench.config import Config
from bench.load import ClientPool
from bench.result import PartResult, table
from bench.stack import MODEL_NAME, SECRET, Stack
from bench.stats import ms, percentile
from examples.processes import metric
from mlflow_hotswap_plugin import events, signing

SENDERS = 8
RESOLVE_LOG = r"GET /api/2\.0/mlflow/registered-models/alias\?\S*alias=storm"


def send_storm(url_port: int, body: bytes, count: int, seconds: float) -> tuple[dict[int, int],
                                                                                float]:
    """`count` notifications, each with its own delivery id and signature, paced evenly over
    `seconds` by SENDERS threads on kept-alive connections. Returns statuses and duration."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    started = time.perf_counter()

    def sender(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
        for i in range(offset, count, SENDERS):
            due = started + seconds * i / count
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            headers = {"Content-Type": "application/json", **signing.headers(body, SECRET)}
            try:
                conn.request("POST", "/webhooks/mlflow", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=30)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return statuses, time.perf_counter() - started


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(6, "Notification storm")
    old, new = stack.versions[0], stack.versions[1]
    stack.set_alias("storm", old)
    # Not among HOTSWAP_TARGETS, with a poll far away: only the storm can tell it.
    stack.start_receivers({"storm": {"MODEL_ALIAS": "storm", "MODEL_UPDATE_INTERVAL": "3600"}})
    receiver = stack.receivers["storm"]
    try:
        stack.set_alias("storm", new)
        resolves_before = stack.mlflow_log_count(RESOLVE_LOG)
        misses_before = metric(receiver.url, "hotswap_model_cache_misses_total")
        reloads_before = metric(receiver.url, "hotswap_model_reloads_total", {"trigger": "webhook"})
        steady = 0.7 if cfg.smoke else 3.0
        pool = ClientPool(receiver.url + "/invocations", stack.sample_body(1), 4,
                          steady * 2 + cfg.storm_seconds + 120).start()
        try:
            time.sleep(steady)
            storm_start = time.perf_counter()
            body = events.alias_created(MODEL_NAME, "storm", new).to_json()
            statuses, took = send_storm(receiver.port, body, cfg.storm_notifications,
                                        cfg.storm_seconds)
            storm_end = time.perf_counter()
            stack.wait_serving(receiver.url, new, timeout=60)
            served_at = time.perf_counter()
            time.sleep(steady)
        finally:
            samples = pool.stop()
        # Let any refresh queued by the storm finish before counting.
        time.sleep(1.0)
        resolves = stack.mlflow_log_count(RESOLVE_LOG) - resolves_before
        loads = metric(receiver.url, "hotswap_model_cache_misses_total") - misses_before
        swaps = metric(receiver.url, "hotswap_model_reloads_total",
                       {"trigger": "webhook"}) - reloads_before
    finally:
        stack.stop_receiver("storm")
    steady_lat = [s.latency for s in samples if s.ok and s.end < storm_start]
    storm_lat = [s.latency for s in samples if s.ok and storm_start <= s.end <= storm_end]
    failed = sum(1 for s in samples if not s.ok)
    result.add("registry resolves caused by the storm", f"{resolves:.0f}", "<= 2", resolves <= 2)
    result.add("model loads caused by the storm", f"{loads:.0f} (swaps: {swaps:.0f})", "<= 2",
               loads <= 2)
    result.add("prediction p50 / p99 during the storm vs before",
               f"{ms(percentile(storm_lat, 50))} / {ms(percentile(storm_lat, 99))} vs "
               f"{ms(percentile(steady_lat, 50))} / {ms(percentile(steady_lat, 99))}",
               "(context)")
    result.add("failed predictions during the run", str(failed), "0", failed == 0)
    result.tables.append(table(
        ["notifications", "sent in", "answers", "new version served after storm start",
         "predictions (4 clients)"],
        [[str(cfg.storm_notifications), f"{took:.2f} s",
          ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items())),
          f"{served_at - storm_start:.2f} s", str(len(samples))]]))
    result.notes += [
        f"Each notification is `model_version_alias.created` for @storm -> version {new}, "
        "with its own delivery id, signed with mlflow_hotswap_plugin/signing.py, from "
        f"{SENDERS} threads on kept-alive connections, paced evenly.",
        "Resolves = `GET .../registered-models/alias?...alias=storm` lines in the MLflow "
        "server's access log (only this receiver follows @storm); loads = the receiver's "
        "hotswap_model_cache_misses_total.",
    ]
    return result
