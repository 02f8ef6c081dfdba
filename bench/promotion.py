"""Promotion to serving (`python -m bench --parts 1`).

From the return of the registry call (stage transition, alias move) to the first prediction
answered with the new X-Model-Version, polled by one client back to back on a kept-alive
connection. Push path (the plugin notifies), then the poll as the only path.
"""

from __future__ import annotations

import http.client
import random
import time

from bench import rollout
from bench.config import Config
from bench.load import check_loopback, post_once
from bench.result import PartResult, table
from bench.stack import Stack
from bench.stats import ms, percentile, sec


def wait_for_version(url: str, body: bytes, version: str, since: float,
                     timeout: float) -> tuple[float, int, int]:
    """Seconds from `since` to the first answer served by `version`; with the number of
    requests sent and how many of them failed."""
    host, port = check_loopback(url)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"Content-Type": "application/json"}
    sent = failed = 0
    deadline = since + timeout
    try:
        while time.perf_counter() < deadline:
            sent += 1
            try:
                status, served, _ = post_once(conn, "/invocations", body, headers)
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            if status != 200:
                failed += 1
            elif served == version:
                return time.perf_counter() - since, sent, failed
    finally:
        conn.close()
    raise TimeoutError(f"{url} did not serve version {version} within {timeout}s")


def next_version(stack: Stack, current: str) -> str:
    versions = stack.versions
    return versions[(versions.index(current) + 1) % len(versions)]


def measure(stack: Stack, url: str, move: str, count: int, timeout: float,
            phase_jitter: float = 0.0) -> tuple[list[float], int, int]:
    """`count` promotions through `move` ("stage:<Stage>" or "alias:<alias>") and their lags."""
    body = stack.sample_body(1)
    current = stack.wait_serving(url)
    lags: list[float] = []
    sent = failed = 0
    for _ in range(count):
        version = next_version(stack, current)
        if phase_jitter:
            # Promote at a random point of the poll cycle, or every lag has the same phase.
            time.sleep(random.uniform(0, phase_jitter))
        kind, _, target = move.partition(":")
        if kind == "stage":
            stack.promote(version, target)
        else:
            stack.set_alias(target, version)
        returned = time.perf_counter()
        lag, n, bad = wait_for_version(url, body, version, returned, timeout)
        lags.append(lag)
        sent, failed = sent + n, failed + bad
        current = version
    return lags, sent, failed


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(1, "Promotion to serving")
    rows = []
    push_p50 = push_max = 0.0
    for label, role, move in (("stage transition (push)", "stage", "stage:Production"),
                              ("alias move (push)", "alias", "alias:champion")):
        lags, _sent, failed = measure(stack, stack.receivers[role].url, move, cfg.promotions, 30)
        p50, p95 = percentile(lags, 50), percentile(lags, 95)
        push_p50, push_max = max(push_p50, p50), max(push_max, max(lags))
        rows.append([label, str(len(lags)), ms(p50), ms(p95), ms(max(lags)), str(failed)])
        result.add(f"{label}: p95", ms(p95), "< 1 s", p95 < 1.0)

    # The poll as the only path: a receiver the plugin does not notify, following Staging.
    interval = cfg.poll_interval
    stack.promote(stack.versions[0], "Staging")
    stack.start_receivers({"poll": {"MODEL_STAGE": "Staging",
                                    "MODEL_UPDATE_INTERVAL": str(interval)}})
    try:
        lags, _sent, failed = measure(stack, stack.receivers["poll"].url, "stage:Staging",
                                     cfg.poll_promotions, interval * 3 + 30,
                                     phase_jitter=interval)
    finally:
        stack.stop_receiver("poll")
    p50, p95 = percentile(lags, 50), percentile(lags, 95)
    rows.append([f"stage transition, poll only ({interval:g} s)", str(len(lags)), sec(p50),
                 sec(p95), sec(max(lags)), str(failed)])
    result.add(f"poll only, {interval:g} s interval: p50 / p95", f"{sec(p50)} / {sec(p95)}",
               f"about {interval / 2:g} s / {interval * 0.95:g} s + load")
    result.add("poll only, default 60 s (expected)",
               f"p50 ~{30 + push_p50:.1f} s, p95 ~{57 + push_p50:.1f} s, "
               f"max ~{60 + push_max:.1f} s", "at most one interval + load")
    # Staged rollout: the same promotion for a version pre-warmed in Staging.
    rollout.prewarmed_promotions(stack, cfg, result, rows)
    result.tables.append(table(["path", "promotions", "p50", "p95", "max", "failed requests"],
                               rows))
    rollout.shadow_cost(stack, cfg, result)
    result.notes += [
        "Lag = from the return of the MlflowClient call to the first `POST /invocations` "
        "answered with the new `X-Model-Version`, one client polling back to back.",
        f"Versions cycle through {len(stack.versions)} registered versions, so with "
        "MODEL_CACHE_SIZE=5 every promotion downloads, loads and warms up a version anew "
        "(when there are more versions than cache slots).",
        "Expected lag at the default 60 s interval: the promotion lands at a uniformly random "
        "point of the poll cycle, so lag = U(0, 60 s) + resolve and load (the push lag).",
    ]
    return result
