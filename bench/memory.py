"""Memory (`python -m bench --parts 4`). RSS of a receiver (from /proc/PID/status) over many swaps
that cycle through every registered version with a bounded cache, and how many models it holds."""

from __future__ import annotations

from pathlib import Path

import requests

from bench.config import Config
from bench.result import PartResult, table
from bench.stack import Stack, rss_kib


def held(model_dir: Path) -> int:
    """Models the receiver holds: each has a download folder until it is released."""
    return sum(1 for p in model_dir.iterdir() if p.is_dir()) if model_dir.exists() else 0


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def run(stack: Stack, cfg: Config) -> PartResult:
    result = PartResult(4, "Memory")
    model_dir = stack.workdir / "models-memory"
    versions = stack.versions
    stack.set_alias("memory", versions[0])
    stack.start_receivers({"memory": {
        "MODEL_ALIAS": "memory", "MODEL_CACHE_SIZE": str(cfg.memory_cache_size),
        "MODEL_UPDATE_INTERVAL": "3600", "HOTSWAP_MODEL_DIR": str(model_dir)}})
    receiver = stack.receivers["memory"]
    pid = receiver.popen.pid  # python -m receiver: uvicorn runs in this very process
    try:
        rss = [rss_kib(pid)]
        counts = [held(model_dir)]
        for i in range(1, cfg.memory_swaps + 1):
            version = versions[i % len(versions)]
            stack.set_alias("memory", version)
            answer = requests.post(receiver.url + "/models/reload", timeout=120)
            answer.raise_for_status()
            assert answer.json()["model_version"] == version, answer.text
            rss.append(rss_kib(pid))
            counts.append(held(model_dir))
    finally:
        stack.stop_receiver("memory")
    cycle = len(versions)
    after_cycle = rss[min(cycle, len(rss) - 1)]
    final, peak = rss[-1], max(rss[cycle:] or rss)
    growth = (peak - after_cycle) / after_cycle
    most = max(counts)
    # The first cycle fills the cache one model at a time: the slope is one model's cost.
    fill = min(cfg.memory_cache_size, cycle) - 1
    per_model = (rss[fill] - rss[0]) / fill if fill > 0 else float("nan")
    result.add(f"RSS growth after the first cycle ({cycle} swaps), peak over "
               f"{cfg.memory_swaps} swaps", f"{growth:+.1%} ({mib(after_cycle)} -> peak "
               f"{mib(peak)}, final {mib(final)})", "<= +10%", growth <= 0.10)
    result.add("models held at once (served + cached)", str(most),
               f"<= {cfg.memory_cache_size}", most <= cfg.memory_cache_size)
    result.add("memory per cached model", mib(per_model), "(context)")
    step = max(1, len(rss) // 12)
    result.tables.append(table(["swaps done", "RSS", "models held"],
                               [[str(i), mib(rss[i]), str(counts[i])]
                                for i in range(0, len(rss), step)]
                               + ([[str(len(rss) - 1), mib(rss[-1]), str(counts[-1])]]
                                  if (len(rss) - 1) % step else [])))
    result.notes += [
        f"A receiver following alias @memory with MODEL_CACHE_SIZE={cfg.memory_cache_size}; "
        f"each swap moves the alias to the next of {cycle} versions and calls "
        "`POST /models/reload`, which returns once the swap is done.",
        "Models held = download folders present (a model's folder is deleted when it leaves "
        "both the cache and service).",
        f"Per-model cost = RSS growth while the cache fills (start to {fill + 1} models held) "
        f"divided by {fill}.",
    ]
    return result
