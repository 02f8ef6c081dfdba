"""Staged rollout, measured with promotion to serving (bench/promotion.py): promotion of a
pre-warmed version, and what a 100 % shadow costs the primary's latency.

- Pre-warmed: the notified `stage` receiver, restarted with MODEL_PREWARM=Staging. Each round
  moves the next version to Staging, waits until the receiver holds it, then promotes it to
  Production and times the first answer from it, as promotion.py does for the cold path.
- Shadow cost: a receiver following Production with MODEL_SHADOW=Staging (100 %), Staging
  holding another version, against the plain `stage` receiver on the same Production version,
  under the same load, alternately.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import requests

from bench.config import Config
from bench.result import PartResult, table
from bench.stack import Stack
from bench.stats import ms, percentile
from bench.throughput import load_run
from examples.processes import metric, wait_until

PREWARM_TARGET = 0.150  # seconds, p95: a pre-warmed promotion is a swap, not a load


def _current(url: str) -> dict[str, Any]:
    return dict(requests.get(url + "/models/current", timeout=5).json())


def _holds(url: str, kind: str, version: str) -> bool:
    return _held(url, kind) == version


def _held(url: str, key: str) -> str | None:
    described = _current(url).get(key)
    if isinstance(described, list):  # prewarmed: one entry per reference
        described = described[0] if described else None
    return described.get("version") if described else None


def prewarmed_promotions(stack: Stack, cfg: Config, result: PartResult,
                         rows: list[list[str]]) -> None:
    from bench.promotion import next_version, wait_for_version

    # The poll rows move versions through Staging, the Production one included: start from a
    # known Production version.
    stack.promote(stack.versions[0], "Production")
    stack.stop_receiver("stage")
    stack.start_receivers({"stage": {"MODEL_STAGE": "Production", "MODEL_PREWARM": "Staging"}})
    url = stack.receivers["stage"].url
    body = stack.sample_body(1)
    lags: list[float] = []
    misses = failed = 0
    try:
        current = stack.wait_serving(url)
        for _ in range(cfg.promotions):
            version = next_version(stack, current)
            stack.promote(version, "Staging")
            wait_until(partial(_holds, url, "prewarmed", version), timeout=60,
                       interval=0.02, message=f"version {version} pre-warmed")
            before = metric(url, "hotswap_model_cache_misses_total")
            stack.promote(version, "Production")
            lag, _, bad = wait_for_version(url, body, version, time.perf_counter(), 30)
            lags.append(lag)
            failed += bad
            misses += int(metric(url, "hotswap_model_cache_misses_total") - before)
            current = version
    finally:
        stack.stop_receiver("stage")
        stack.start_receivers({"stage": {"MODEL_STAGE": "Production"}})
    p50, p95 = percentile(lags, 50), percentile(lags, 95)
    rows.append(["stage transition of a pre-warmed version (push)", str(len(lags)), ms(p50),
                 ms(p95), ms(max(lags)), str(failed)])
    result.add("pre-warmed (MODEL_PREWARM=Staging) Staging -> Production: p95", ms(p95),
               f"< {PREWARM_TARGET * 1000:.0f} ms", p95 < PREWARM_TARGET)
    result.add("downloads during those promotions (cache misses)", str(misses), "0",
               misses == 0)


def shadow_cost(stack: Stack, cfg: Config, result: PartResult) -> None:
    """Primary latency at 1, 8 and 32 clients, with and without a 100 % shadow."""
    production, staging = stack.versions[0], stack.versions[1]
    stack.promote(production, "Production")
    stack.promote(staging, "Staging")
    plain = stack.receivers["stage"].url
    stack.wait_serving(plain, production, timeout=60)
    stack.start_receivers({"shadow": {"MODEL_STAGE": "Production", "MODEL_SHADOW": "Staging",
                                      "MODEL_UPDATE_INTERVAL": "600"}})
    shadowed = stack.receivers["shadow"].url
    try:
        stack.wait_serving(shadowed, production, timeout=60)
        wait_until(lambda: _held(shadowed, "shadow") == staging, timeout=60,
                   message="the shadow loaded")
        use_wrk = False  # per-request records from our client, the same for both receivers
        body_file, body = stack.body_file(1), stack.sample_body(1)
        for url in (plain, shadowed):  # warm both
            load_run(url + "/invocations", body_file, body, 2, 1.0, use_wrk)
        # 1 client: never a queue, so every shadow runs and its whole cost shows; 8 and 32:
        # closed-loop clients keep a queue most of the time, so many shadows are shed.
        levels = (1, 8, 32) if not cfg.smoke else (1, *cfg.concurrencies)
        labels = {"model": "fraud_detection_model", "version": staging}
        rows = []
        for cell, clients in enumerate(levels):
            runs: dict[str, dict[str, float]] = {}
            order = ["without", "with"] if cell % 2 == 0 else ["with", "without"]
            compared = shed = 0.0
            for which in order:
                url = plain if which == "without" else shadowed
                if which == "with":
                    before = (metric(url, "hotswap_shadow_comparisons_total", labels),
                              metric(url, "hotswap_shadow_shed_total", labels))
                runs[which] = load_run(url + "/invocations", body_file, body, clients,
                                       cfg.load_seconds, use_wrk)
                if which == "with":
                    # Background shadows may still finish after the load stops.
                    compared = metric(url, "hotswap_shadow_comparisons_total", labels) - before[0]
                    shed = metric(url, "hotswap_shadow_shed_total", labels) - before[1]
            a, b = runs["without"], runs["with"]
            share = compared / (compared + shed) if compared + shed else 0.0
            rows.append([str(clients), f"{a['rps']:.1f} / {b['rps']:.1f}",
                         f"{ms(a['p50'])} / {ms(b['p50'])}", f"{ms(a['p99'])} / {ms(b['p99'])}",
                         f"{b['p50'] / a['p50']:.2f}x", f"{b['p99'] / a['p99']:.2f}x",
                         f"{compared:.0f} / {shed:.0f} ({share:.0%} run)",
                         f"{a['failed']:.0f} / {b['failed']:.0f}"])
            result.add(f"100 % shadow at {clients} clients: primary p50 / p99 with vs without",
                       f"{b['p50'] / a['p50']:.2f}x / {b['p99'] / a['p99']:.2f}x "
                       f"({share:.0%} of shadows run, the rest shed)", "(context)")
    finally:
        stack.stop_receiver("shadow")
    result.tables.append(table(
        ["clients", "req/s without / with", "p50 without / with", "p99 without / with",
         "p50 ratio", "p99 ratio", "shadows compared / shed", "failed (without / with)"],
        rows))
    result.notes += [
        f"Shadow cost: the same Production version ({production}) on both receivers; the "
        f"shadowed one also scores every answered request with version {staging} (Staging) "
        "after the answer is sent: shadows gather for 50 ms, start only while no request "
        "waits in the lane, and run merged in a thread of their own; a shadow not started "
        "within 2 s, or beyond HOTSWAP_MAX_QUEUE waiting, is shed. "
        f"{cfg.load_seconds:g} s per cell, bench/load.py's threaded client, 1-row bodies; "
        "the two runs of a cell alternate their order from cell to cell.",
        "Pre-warmed promotion: each version is moved to Staging first; the receiver "
        "(MODEL_PREWARM=Staging) loads and warms it up; the lag is timed from the Production "
        "promotion, as for the cold rows above. Misses are counted from "
        "hotswap_model_cache_misses_total around each promotion.",
    ]
