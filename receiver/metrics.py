"""Every Prometheus metric the receiver exports, on a registry of its own (one per app).

Under a supervisor (`--workers N`) the values live in prometheus_client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the worker before it builds its app) and `/metrics` sums the
workers, so a scraper sees one replica. The gauges say how: the queue depth is summed over the
live workers, the served version is shown per live worker (a `pid` label), the start time is
the first worker's.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None,
                 multiprocess: bool = False) -> None:
        self.registry = registry or CollectorRegistry()
        self.multiprocess = multiprocess
        r = self.registry
        # A reader of counter deltas (the rollout controller) tells a restarted replica by it.
        # Under a supervisor the summed counters outlive a worker (its files stay), so the
        # replica's start is its first worker's: the earliest, dead workers included.
        self.start_time = Gauge(
            "hotswap_start_time_seconds", "When this receiver started, in seconds since the epoch",
            registry=r, multiprocess_mode="min")
        self.start_time.set(time.time())
        self.model_version = Gauge(
            "hotswap_model_version", "Model version currently served", ["model"], registry=r,
            multiprocess_mode="liveall")
        self.cache_hits = Counter(
            "hotswap_model_cache_hits", "Model lookups answered from the in-memory cache",
            registry=r)
        self.cache_misses = Counter(
            "hotswap_model_cache_misses", "Model lookups that had to load from MLflow",
            registry=r)
        self.load_duration = Histogram(
            "hotswap_model_load_duration_seconds", "Download, load and warm-up of a model version",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r)
        self.update_errors = Counter(
            "hotswap_model_update_errors", "Failed attempts to resolve, load or warm up a model",
            registry=r)
        self.reloads = Counter(
            "hotswap_model_reloads", "Swaps to a new model version, by what triggered them",
            ["trigger"], registry=r)
        self.prediction_duration = Histogram(
            "hotswap_prediction_duration_seconds",
            "Time to score one request, waiting included, by role (primary and canary: from "
            "the body read to its predictions; shadow: from the answer sent to the comparison)",
            ["role"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r)
        self.registry_resolves = Counter(
            "hotswap_registry_resolves", "Lookups of the followed stage or alias in MLflow",
            registry=r)
        self.webhook_requests = Counter(
            "hotswap_webhook_requests", "Notifications received, by outcome", ["outcome"],
            registry=r)
        self.load_failures = Counter(
            "hotswap_model_load_failures",
            "Loads that failed: `error` (raised), `exit` (SystemExit and the like), `timeout` "
            "(abandoned after HOTSWAP_LOAD_TIMEOUT)", ["reason"], registry=r)
        self.pinned_refused = Counter(
            "hotswap_pinned_requests_refused",
            "Pinned-version requests answered without a load: `failed_recently` (from the "
            "negative cache), `busy` (too many pinned loads at once)", ["reason"], registry=r)
        # The scoring lane (lane.py).
        self.batch_rows = Histogram(
            "hotswap_predict_batch_rows", "Rows in one predict call (merged requests included)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096), registry=r)
        self.batch_requests = Histogram(
            "hotswap_predict_batch_requests", "Requests merged into one predict call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.queue_depth = Gauge(
            "hotswap_lane_queue_depth", "Requests admitted to the scoring lane and not yet "
            "answered", registry=r, multiprocess_mode="livesum")
        self.shed_requests = Counter(
            "hotswap_requests_shed", "Requests refused or dropped by the scoring lane, by reason "
            "(overloaded: 503, timeout: 504, disconnected: the client left while it waited)",
            ["reason"], registry=r)
        self.expected_wait = Gauge(
            "hotswap_lane_expected_wait_seconds", "Seconds the requests admitted to the scoring "
            "lane are expected to take to score (0 before any predict is measured); admission "
            "stops at HOTSWAP_MAX_WAIT; under several workers, the longest",
            registry=r, multiprocess_mode="livemax")
        # Staged rollout: who answered (or shadowed) what, and how the shadow compares.
        # protocol: the request's wire protocol, `mlflow` (/invocations) or `v2` (/v2/.../infer).
        roles = ["model", "version", "role", "protocol"]
        self.predictions = Counter(
            "hotswap_predictions", "Predictions made, by model version, role "
            "(primary, canary, shadow) and protocol (mlflow, v2)", roles, registry=r)
        self.prediction_errors = Counter(
            "hotswap_prediction_errors", "Predictions that failed, by model version, role and "
            "protocol", roles, registry=r)
        self.canary_fallbacks = Counter(
            "hotswap_canary_fallbacks", "Canary predictions that failed and were answered by "
            "the primary instead", ["model", "version"], registry=r)
        self.shadow_comparisons = Counter(
            "hotswap_shadow_comparisons", "Shadow predictions compared with the primary's",
            ["model", "version"], registry=r)
        self.shadow_disagreements = Counter(
            "hotswap_shadow_disagreements",
            "Shadow predictions that differed from the primary's", ["model", "version"],
            registry=r)
        self.shadow_shed = Counter(
            "hotswap_shadow_shed", "Shadow predictions skipped because the server was busy (the "
            "shadow queue full, or requests queued in the lane for as long as a shadow may wait)",
            ["model", "version"], registry=r)

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's metrics, or every worker's summed."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        summed = CollectorRegistry()
        MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
        return generate_latest(summed)
