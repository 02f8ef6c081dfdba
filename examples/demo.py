"""The end-to-end demo (`./scripts/demo.sh`): promote a model version and watch it served, then
roll two more out across a fleet, step by step.

It starts a local MLflow server with the hotswap plugin and three receivers (127.0.0.1, .2 and
.3) that follow Production, pre-warm and shadow Staging, and serve the canary @challenger at the
share the registry's tag says (data and logs in a fresh temporary folder), and trains and
registers the fraud-detection model. Version 2 goes to Staging, where the receivers load it
ahead and score live traffic with it in the shadow, passes the training gate and is promoted
while a client keeps predicting, served at once from the cache; then a rollback to version 1
(from the cache too). Version 3 is rolled out by `mlflow-hotswap rollout` at 20, 50 and 100 %
of the requests and promoted; version 4, which fails on every online transaction, is rolled
back at its first step, each request it failed answered by version 3. Everything stops at the
end, also on Ctrl-C.

    python -m examples.demo [--keep] [--summary-json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stderr
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from examples import train_model
from examples.client import CLIENT_THREADS, PredictionClient
from examples.processes import (
    Process,
    free_port,
    metric,
    pid_running,
    port_open,
    promote,
    scrape,
    set_alias,
    signals_deferred,
    spawn,
    start_mlflow_server,
    start_receiver,
    wait_until,
    wait_up,
)

MODEL_NAME = train_model.DEFAULT_MODEL_NAME
STAGE = "Production"
STAGING = "Staging"
GATE = "roc_auc>=0.95"
SHADOW_SAMPLE = 50  # shadow comparisons to wait for before the gate
SWAP_TIMEOUT = 30.0  # far below the 60 s poll: a swap seen in time was pushed
STEPS = 7  # of the demo, as printed: [1/7] ...
FLEET = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # one receiver on each
CANARY = "@challenger"
# After each answer, per client thread: the client leaves a 2-core machine room for the rest
# (the rollout command, training) and still sends a 20 % step its 20 canary requests in ~2 s.
CLIENT_PAUSE = 0.03
FAILS_ON = "is_online"  # version 4 raises on these transactions (examples/flaky_model.py)
# The console script installed beside this Python, as a person would run it.
HOTSWAP = str(Path(sys.executable).with_name("mlflow-hotswap"))
# Short steps for a demo; in production, minutes and hundreds of requests (the defaults). The
# p99 of a step's 20 canary requests is their slowest, so one request that waited for the CPU
# of a machine running every process here would fail a good version: the latency check is
# loosened to what only a broken version reaches (tests/integration/test_fleet_rollout.py
# exercises it).
ROLLOUT_OPTIONS = ("--steps", "20,50,100", "--step-seconds", "1", "--min-requests", "20",
                   "--max-latency-ratio", "20")
ROLLOUT_TIMEOUT = 120.0
SHOWN_METRICS = (
    "hotswap_model_version", "hotswap_model_reloads_total", "hotswap_webhook_requests_total",
    "hotswap_model_cache_hits_total", "hotswap_model_cache_misses_total",
    "hotswap_model_load_duration_seconds_count", "hotswap_model_load_duration_seconds_sum",
    "hotswap_model_update_errors_total", "hotswap_prediction_duration_seconds_count",
    "hotswap_predictions_total", "hotswap_shadow_comparisons_total",
    "hotswap_shadow_disagreements_total", "hotswap_shadow_shed_total",
)
# The receiver's log format (receiver/__main__.py): "2025-01-31 12:00:00,123 INFO name: message".
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ [\w.]+: (.*)$")


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; unwinds the demo so that everything it started is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


# -- output -----------------------------------------------------------------------------------

def say(text: str = "", end: str = "\n") -> None:
    """Print and flush; once nobody reads (`| head`), go on quietly: the clean-up must run."""
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process


@contextmanager
def progress(label: str) -> Iterator[dict[str, str]]:
    """Print `label...` and, on a terminal, a running clock; then the outcome and time taken.

    The body may set `outcome["text"]` for what to print after the label.
    """
    outcome: dict[str, str] = {}
    started = time.perf_counter()
    tty = sys.stdout.isatty()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.2):
            say(f"\r  {label}... {time.perf_counter() - started:.1f}s\x1b[K", end="")

    ticker = threading.Thread(target=tick, daemon=True) if tty else None
    if ticker is not None:
        ticker.start()
    failed = True
    try:
        yield outcome
        failed = False
    finally:
        done.set()
        if ticker is not None:
            ticker.join()
        elapsed = f"{time.perf_counter() - started:.1f}s"
        text = "stopped" if failed else (f"{outcome['text']} ({elapsed})" if outcome.get("text")
                                        else elapsed)
        say(("\r" if tty else "") + f"  {label}... {text}" + ("\x1b[K" if tty else ""))


# -- the receiver, seen from outside ----------------------------------------------------------

def total(samples: dict[str, float], name: str) -> float:
    """The sum of `name` over all its labels."""
    return sum(v for key, v in samples.items() if key == name or key.startswith(name + "{"))


ACCEPTED = 'hotswap_webhook_requests_total{outcome="accepted"}'


def ready(receiver: Process) -> bool:
    return requests.get(receiver.url + "/health/ready", timeout=2).ok


def address(receiver: Process) -> str:
    return f"{receiver.host}:{receiver.port}"


class LogTail:
    """New complete lines of a log file since the last call, with their timestamps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def lines(self) -> list[tuple[float | None, str]]:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        found: list[tuple[float | None, str]] = []
        for raw in complete.decode(errors="replace").splitlines():
            match = LOG_LINE.match(raw)
            if match:
                stamp = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S"))
                found.append((stamp + int(match[2]) / 1000, match[3]))
            else:
                found.append((None, raw))
        return found


@dataclass
class SwapReport:
    version: str
    promotion_seconds: float  # how long the registry call took
    latency_seconds: float  # from the promotion's return to the first answer from `version`
    webhooks_accepted: int  # notifications the receiver accepted during the swap
    trigger: str  # what made the receiver swap, from its log: webhook, poll, ...
    loaded: bool  # whether the receiver loaded the version from MLflow (a cache miss)
    load_seconds: float | None
    cache_hits: int
    cache_misses: int


def watch_swap(receiver: Process, client: PredictionClient, version: str,
               promote: Callable[[], None]) -> SwapReport:
    """Promote, then print each step of the receiver's swap as it shows, until `version` answers."""
    tail = LogTail(receiver.log_path)
    before = scrape(receiver.url)
    started = time.time()
    promote()
    returned = time.time()

    def show(at: float, text: str) -> None:
        say(f"    +{at - started:.3f}s  {text}")

    show(returned, "promotion returned")
    webhook_seen: float | None = None
    swapped: float | None = None
    first: float | None = None
    load_seconds: float | None = None
    trigger = "unknown"
    loaded = False
    deadline = time.monotonic() + SWAP_TIMEOUT
    while first is None or swapped is None or webhook_seen is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the receiver did not serve version {version} within "
                               f"{SWAP_TIMEOUT:.0f}s of its promotion; see {receiver.log_path}")
        # The log first, then the metrics: a webhook that led to a logged line is then counted.
        events = tail.lines()
        now = time.time()
        accepted = scrape(receiver.url).get(ACCEPTED, 0) - before.get(ACCEPTED, 0)
        if webhook_seen is None and accepted >= 1:
            # Seen now, but it came no later than the first line it caused.
            webhook_seen = min([now] + [t for t, m in events if t is not None
                                        and m.startswith(("Loading model", "Swapped to"))])
            show(webhook_seen, f"notification received (hotswap_webhook_requests_total "
                               f"+{accepted:g})")
        for at, message in events:
            at = at or time.time()
            if message.startswith("Loading model"):
                loaded = True
                show(at, f"loading version {version} from MLflow")
            elif message.startswith("Model loaded successfully"):
                found = re.search(r"in ([\d.]+)s", message)
                load_seconds = float(found[1]) if found else None
                show(at, f"loaded and warmed up{f' in {load_seconds:.1f}s' if found else ''}")
            elif message.startswith(f"Swapped to model version {version} "):
                swapped = at
                found = re.search(r"trigger (\w+)", message)
                trigger = found[1] if found else trigger
                show(at, f"swapped to version {version} (trigger: {trigger})"
                     + ("" if loaded else ", straight from the cache"))
        if first is None:
            first = client.first_answer(version, after=started, url=receiver.url)
            if first is not None:
                show(first, f"first answer from version {version}")
        time.sleep(0.02)
    assert first is not None
    after = scrape(receiver.url)
    return SwapReport(
        version=version, promotion_seconds=returned - started,
        latency_seconds=max(0.0, first - returned),
        webhooks_accepted=int(after.get(ACCEPTED, 0) - before.get(ACCEPTED, 0)), trigger=trigger,
        loaded=loaded, load_seconds=load_seconds,
        cache_hits=int(total(after, "hotswap_model_cache_hits_total")
                       - total(before, "hotswap_model_cache_hits_total")),
        cache_misses=int(total(after, "hotswap_model_cache_misses_total")
                         - total(before, "hotswap_model_cache_misses_total")))


# -- the demo ---------------------------------------------------------------------------------

@dataclass
class RolloutReport:
    version: str
    exit_code: int  # mlflow-hotswap rollout's: 0 promoted, 1 rolled back
    seconds: float
    record: str | None  # the version's tag hotswap.rollout: the rollout's outcome, in its words
    canary_percent: str | None  # the registered model's tag hotswap.canary_percent afterwards
    production: str | None  # the version in Production afterwards
    fallbacks: int  # requests the canary failed on, answered by the primary (all replicas)
    served: dict[str, str | None]  # replica: the version it serves once the fleet took it


@dataclass
class Summary:
    ok: bool = False
    interrupted: str | None = None
    error: str | None = None
    versions_served: list[str] = field(default_factory=list)
    staging: dict[str, Any] | None = None
    swap: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)  # by step number
    served_at_end: dict[str, str | None] = field(default_factory=dict)  # replica: version
    predictions: dict[str, Any] = field(default_factory=dict)
    pids: dict[str, list[int]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # the servers', on their hosts
    hosts: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None
    data_kept: bool = False
    seconds: float = 0.0


class Demo:
    def __init__(self, workdir: Path, summary: Summary) -> None:
        self.workdir = workdir
        self.summary = summary
        self.secret = secrets.token_urlsafe(24)
        self.processes: dict[str, Process] = {}
        self.receivers: list[Process] = []
        self.client: PredictionClient | None = None
        self.tracking_uri = ""
        self._step: tuple[int, float] | None = None  # the step running, since when

    def step(self, number: int, title: str) -> None:
        """Print the step's title; the one before it is over."""
        self.end_step()
        self._step = (number, time.perf_counter())
        say()
        say(f"[{number}/{STEPS}] {title}")

    def end_step(self) -> None:
        if self._step is not None:
            number, started = self._step
            self.summary.step_seconds[str(number)] = round(time.perf_counter() - started, 1)
            self._step = None

    def _start(self, role: str, start: Callable[[], Process]) -> Process:
        with signals_deferred():
            process = self.processes[role] = start()
            self.summary.pids[role] = [process.pid]
            if process.port:  # a command listens on none
                self.summary.ports[role] = process.port
                self.summary.hosts[role] = process.host
        return process

    def _note_pids(self) -> None:
        for role, process in self.processes.items():
            self.summary.pids[role] = sorted(set(self.summary.pids[role])
                                             | set(process.group_pids()))

    def start_mlflow(self, webhooks: Sequence[str]) -> Process:
        env = {"HOTSWAP_TARGETS": ",".join(webhooks), "HOTSWAP_WEBHOOK_SECRET": self.secret}
        return self._start("mlflow_server", lambda: start_mlflow_server(
            self.workdir, extra_env=env, wait=False))

    def start_receivers(self, addresses: Sequence[tuple[str, int]]) -> list[Process]:
        """One receiver per (host, port), all started at once; returns without waiting."""
        env = {"MODEL_STAGE": STAGE, "MODEL_UPDATE_INTERVAL": "60",
               # Staging is loaded ahead and scores every request again, after the answer.
               "MODEL_PREWARM": STAGING, "MODEL_SHADOW": STAGING,
               # No percent: the share is the registry's tag, which `rollout` moves.
               "MODEL_CANARY": CANARY,
               "HOTSWAP_WEBHOOK_SECRET": self.secret,
               "HOTSWAP_MODEL_DIR": str(self.workdir / "receiver-models"),
               # MLflow 3 loads scikit-learn models only with this (see examples/train_model.py).
               "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
        for number, (host, port) in enumerate(addresses, 1):
            self.receivers.append(self._start(f"receiver_{number}", partial(
                start_receiver, self.workdir, self.tracking_uri, MODEL_NAME, env=env,
                host=host, port=port, log_name=f"receiver-{number}.log", wait=False)))
        return self.receivers

    def train_and_register(self, seed: int
                           ) -> tuple[train_model.TrainedModel, train_model.Registered]:
        frame, labels = train_model.make_transactions(seed=seed)
        say(f"  data: {len(frame):,} synthetic card transactions, {labels.mean():.1%} fraud "
            f"(seed {seed})")
        trees = train_model.DEFAULT_N_ESTIMATORS
        with progress(f"training a {trees}-tree random forest") as outcome:
            trained = train_model.train(frame, labels, seed=seed)
            m = trained.metrics
            outcome["text"] = (f"precision {m['precision']:.2f}, recall {m['recall']:.2f}, "
                               f"ROC AUC {m['roc_auc']:.3f}")
        with progress("logging it to MLflow and registering it") as outcome:
            # MLflow prints "Created version ..." to stderr; into the data folder with it.
            with open(self.workdir / "client.log", "a") as log, redirect_stderr(log):
                registered = train_model.register(trained, MODEL_NAME, self.tracking_uri)
            outcome["text"] = (f"{MODEL_NAME} version {registered.version}, tagged with its "
                               f"training metadata")
        return trained, registered

    def register_flaky(self, base: train_model.TrainedModel, version: str) -> str:
        """A new version: `version`'s forest behind examples/flaky_model.py, which raises on
        every online transaction."""
        import mlflow
        from mlflow.models import infer_signature

        example = base.input_example
        code = Path(__file__).with_name("flaky_model.py")
        with progress(f"registering version {version}'s forest behind a step that raises on "
                      f"{FAILS_ON}") as outcome:
            with open(self.workdir / "client.log", "a") as log, redirect_stderr(log), \
                    mlflow.start_run():
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=str(code),
                    artifacts={"forest": f"models:/{MODEL_NAME}/{version}"},
                    model_config={"fails_on": FAILS_ON},
                    signature=infer_signature(example, base.model.predict(example)),
                    pip_requirements=train_model.pip_requirements(),
                    registered_model_name=MODEL_NAME)
            registered = str(info.registered_model_version)
            outcome["text"] = f"{MODEL_NAME} version {registered}"
        return registered

    def promote(self, version: str, stage: str = STAGE) -> None:
        promote(MODEL_NAME, version, stage, self.tracking_uri, archive_existing=True)

    def stage_and_shadow(self, version: str) -> dict[str, Any]:
        """Move `version` to Staging; wait until every receiver pre-warmed it and, between
        them, shadowed SHADOW_SAMPLE live requests with it; say what that showed."""
        receivers = self.receivers
        before = [scrape(receiver.url) for receiver in receivers]
        self.promote(version, STAGING)
        say(f"  moved version {version} to {STAGING}")

        def prewarmed(receiver: Process) -> dict[str, Any] | None:
            held = self.current(receiver).get("prewarmed") or []
            return next((h for h in held if h["version"] == version), None)

        with progress("waiting for the receivers to pre-warm it") as outcome:
            held = [wait_until(partial(prewarmed, receiver), SWAP_TIMEOUT,
                               message=f"version {version} pre-warmed at {receiver.url}")
                    for receiver in receivers]
            outcome["text"] = (f"loaded and warmed up by all {len(receivers)}, the first at "
                               f"{held[0]['loaded_at'][11:23]} UTC; still serving version "
                               f"{self.current(receivers[0])['version']}")
        labels = f'{{model="{MODEL_NAME}",version="{version}"}}'

        def delta(name: str) -> int:
            return int(sum(scrape(receiver.url).get(name + labels, 0)
                           - earlier.get(name + labels, 0)
                           for receiver, earlier in zip(receivers, before, strict=True)))

        with progress(f"shadowing live traffic with version {version}") as outcome:
            wait_until(lambda: delta("hotswap_shadow_comparisons_total") >= SHADOW_SAMPLE,
                       SWAP_TIMEOUT, message=f"{SHADOW_SAMPLE} shadow comparisons")
            compared = delta("hotswap_shadow_comparisons_total")
            disagreed = delta("hotswap_shadow_disagreements_total")
            shed = delta("hotswap_shadow_shed_total")
            outcome["text"] = (f"{compared} requests scored again after their answers, "
                               f"{disagreed} disagreements ({disagreed / compared:.1%}); "
                               f"{shed} skipped while busy")
        return {"version": version, "prewarmed_at": held[0]["loaded_at"], "compared": compared,
                "disagreed": disagreed, "shed": shed}

    def gate(self, trained: train_model.TrainedModel,
             registered: train_model.Registered) -> bool:
        say(f"  the training gate: {GATE} on its holdout, and not worse there than the "
            f"version in {STAGE}")
        with open(self.workdir / "client.log", "a") as log, redirect_stderr(log):
            decision = train_model.gate(trained, registered,
                                        [train_model.parse_condition(GATE)], self.tracking_uri)
        for line in decision.lines:
            say(f"    {line}")
        return decision.passed

    def run(self) -> None:
        say(f"Data and logs: {self.workdir}")
        self.start()
        v1 = self.version_1()
        self.version_2(v1)
        self.roll_back(v1)
        trained, v3 = self.rollout_good()
        self.rollout_bad(trained, v3)
        self.finish_traffic(v3)
        self.end_step()

    def start(self) -> None:
        self.step(1, f"Starting a local MLflow server with the hotswap plugin, and "
                     f"{len(FLEET)} receivers")
        addresses = [(host, free_port(host)) for host in FLEET]
        mlflow_server = self.start_mlflow([f"http://{host}:{port}/webhooks/mlflow"
                                           for host, port in addresses])
        say(f"  MLflow server: {mlflow_server.url}, SQLite and artifacts in the data folder "
            f"(log: {mlflow_server.log_path.name})")
        self.tracking_uri = mlflow_server.url
        # The client's first MLflow import takes a few seconds: overlap it with the server's.
        import mlflow  # noqa: F401

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        with progress("waiting for the MLflow server") as outcome:
            wait_up(mlflow_server, "/health", 90.0)
            outcome["text"] = "ready"
        self._note_pids()  # its workers too
        # Started now, they come up while version 1 trains.
        receivers = self.start_receivers(addresses)
        say(f"  receivers: {', '.join(r.url for r in receivers)} "
            f"(logs: {', '.join(r.log_path.name for r in receivers)})")
        say(f"    each follows {MODEL_NAME} in {STAGE}, pre-warms and shadows {STAGING}, and "
            f"gives the canary {CANARY} the share of requests that the registry's tag "
            f"hotswap.canary_percent says")
        say("    notified by the plugin at /webhooks/mlflow (signed); each polls MLflow every 60 s "
            "as a safety net")

    def version_1(self) -> train_model.Registered:
        self.step(2, "Version 1 of the fraud-detection model")
        _, v1 = self.train_and_register(seed=1)
        with progress("waiting for the receivers to start") as outcome:
            for receiver in self.receivers:
                wait_up(receiver, "/health/live", 90.0)
            outcome["text"] = f"{len(self.receivers)} up, nothing to serve yet"
        self._note_pids()
        started = time.perf_counter()
        self.promote(v1.version)
        say(f"  promoted version {v1.version} to {STAGE} "
            f"({time.perf_counter() - started:.2f}s)")
        with progress("waiting for the receivers to load and serve it") as outcome:
            for receiver in self.receivers:
                wait_until(partial(ready, receiver), 60, message=f"{receiver.url} ready")
            outcome["text"] = (f"version {self.current(self.receivers[0])['version']} served "
                               f"by all {len(self.receivers)}")
        self.show_predictions(self.receivers[0])
        self.summary.versions_served.append(v1.version)
        return v1

    def version_2(self, v1: train_model.Registered) -> None:
        receiver = self.receivers[0]
        self.step(3, f"Version 2: {STAGING} (pre-warmed, shadowed), the gate, then {STAGE}, "
                     f"while a client keeps predicting")
        trained, v2 = self.train_and_register(seed=2)
        # Live traffic: a different transaction each request, for the shadow to compare on.
        frame, _ = train_model.make_transactions(500, seed=777)
        bodies = [{"dataframe_split": {"columns": list(frame.columns), "data": [row]}}
                  for row in frame.to_numpy().tolist()]
        client = self.client = PredictionClient([r.url for r in self.receivers], bodies,
                                                threads=CLIENT_THREADS, pause=CLIENT_PAUSE)
        client.start()
        wait_until(lambda: client.counts()[0] >= 20, 30, message="background client")
        say(f"  background client: {client.threads} threads predicting from now on (a "
            f"{client.pause * 1000:.0f} ms pause after each answer), round robin over the "
            f"{len(self.receivers)} receivers; so far {client.describe()}")
        self.summary.staging = self.stage_and_shadow(v2.version)
        passed = self.gate(trained, v2)
        self.summary.staging["gate"] = "passed" if passed else "refused"
        if not passed:
            raise RuntimeError(f"version {v2.version} did not pass the training gate")
        say(f"  gate passed: promoting version {v2.version} to {STAGE}, archiving version "
            f"{v1.version}; the first receiver, {receiver.url}, up close:")
        swap = watch_swap(receiver, client, v2.version, lambda: self.promote(v2.version))
        self.summary.swap = asdict(swap)
        self.summary.versions_served.append(v2.version)
        how = ("pre-warmed in step 3: no download, a cache hit" if not swap.loaded
               else "loaded from MLflow at the promotion")
        say(f"  swap latency: {swap.latency_seconds:.3f}s from the promotion's return to the "
            f"first answer from version {v2.version} ({how})")
        say(f"  pushed by the plugin: {swap.webhooks_accepted} notifications (v{v2.version} to "
            f"{STAGE}, v{v1.version} archived); no poll involved")
        client.keep_going(v2.version)
        say(f"  background client: {client.describe()}")

    def roll_back(self, v1: train_model.Registered) -> None:
        receiver, client = self.receivers[0], self.traffic
        self.step(4, f"Rollback: version {v1.version} back to {STAGE}")
        rollback = watch_swap(receiver, client, v1.version, lambda: self.promote(v1.version))
        self.summary.rollback = {**asdict(rollback),
                                 "from_cache": rollback.cache_hits >= 1 and not rollback.loaded
                                 and rollback.cache_misses == 0}
        self.summary.versions_served.append(v1.version)
        how = (f"served from the cache (cache hits +{rollback.cache_hits}, no load)"
               if self.summary.rollback["from_cache"] else "loaded again from MLflow")
        say(f"  rollback latency: {rollback.latency_seconds:.3f}s, {how}")
        client.keep_going(v1.version)
        say(f"  background client: {client.describe()}")
        say(f"  GET {receiver.url}/models/current")
        current = self.current(receiver)
        for key in ("name", "version", "stage", "alias", "loaded_at"):
            if current.get(key) is not None:
                note = "  (its load in step 2: kept in the cache)" if key == "loaded_at" else ""
                say(f"    {key}: {current[key]}{note}")
        say(f"  GET {receiver.url}/metrics (a few of the hotswap_ lines)")
        for key, value in scrape(receiver.url).items():
            if key.split("{")[0] in SHOWN_METRICS:
                shown = f"{value:.3f}" if key.endswith("_sum") else f"{value:g}"
                say(f"    {key} {shown}")

    def rollout_good(self) -> tuple[train_model.TrainedModel, str]:
        self.step(5, f"Version 3 on every receiver as the canary {CANARY}, promoted step by "
                     f"step by `mlflow-hotswap rollout`")
        trained, v3 = self.train_and_register(seed=3)
        self.point_canary(v3.version)
        self.show_status()
        report = self.rollout(v3.version)
        if report.exit_code != 0 or report.production != v3.version:
            raise RuntimeError(f"the rollout of version {v3.version} did not promote it "
                               f"(exit {report.exit_code}): {report.record}")
        self.summary.versions_served.append(v3.version)
        self.show_status()
        return trained, v3.version

    def rollout_bad(self, trained: train_model.TrainedModel, v3: str) -> None:
        self.step(6, f"Version 4: version {v3}'s forest with a bug, failing on every online "
                     f"transaction; the same rollout")
        v4 = self.register_flaky(trained, v3)
        self.point_canary(v4)
        report = self.rollout(v4)
        if report.exit_code != 1 or report.production != v3:
            raise RuntimeError(f"the rollout of version {v4} was not rolled back "
                               f"(exit {report.exit_code}): {report.record}")
        say(f"  {report.fallbacks} requests failed by version {v4} were answered by version "
            f"{v3} instead (hotswap_canary_fallbacks_total); no client saw a failure")
        self.show_status()

    def finish_traffic(self, v3: str) -> None:
        """Stop the client; what it saw and what every receiver serves, into the summary."""
        client = self.traffic
        client.stop()
        answers, failed, versions = client.counts()
        self.summary.predictions = {"answers": answers, "failed": failed,
                                    "by_version": dict(versions),
                                    "errors": client.errors()[:5]}
        self.summary.served_at_end = {address(r): self.current(r)["version"]
                                      for r in self.receivers}
        self._note_pids()
        if failed:
            raise RuntimeError(f"{failed} predictions failed during the swaps and rollouts: "
                               f"{client.errors()[:3]}")
        rollback, swap = self.summary.rollback or {}, self.summary.swap or {}
        self.summary.ok = (bool(rollback.get("from_cache")) and not swap.get("loaded")
                           and set(self.summary.served_at_end.values()) == {v3})

    @property
    def traffic(self) -> PredictionClient:
        assert self.client is not None, "started in step 3"
        return self.client

    # -- the fleet --

    def point_canary(self, version: str) -> None:
        """@challenger to `version`; wait until every receiver loaded it as its canary."""
        set_alias(MODEL_NAME, CANARY[1:], version, self.tracking_uri)
        say(f"  pointed {CANARY} at version {version}")

        def loaded(receiver: Process) -> bool:
            canary = self.current(receiver).get("canary") or {}
            return bool(canary.get("version") == version)

        with progress("waiting for every receiver to load it as its canary") as outcome:
            for receiver in self.receivers:
                wait_until(partial(loaded, receiver), SWAP_TIMEOUT,
                           message=f"{receiver.url} holding version {version} as its canary")
            percent = (self.current(self.receivers[0]).get("canary") or {}).get("percent")
            outcome["text"] = (f"loaded on all {len(self.receivers)}, answering {percent or 0:g} % "
                               f"of requests until the rollout moves the tag")

    def show_status(self) -> None:
        args = ["status", "--receivers", ",".join(r.url for r in self.receivers)]
        say(f"  $ mlflow-hotswap {' '.join(args)}")
        shown = subprocess.run([HOTSWAP, *args], capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
        for line in (shown.stdout + shown.stderr).splitlines():
            say(f"    {line}")
        if shown.returncode != 0:
            raise RuntimeError(f"mlflow-hotswap status exited with {shown.returncode}")

    def rollout(self, version: str) -> RolloutReport:
        """`mlflow-hotswap rollout` of @challenger (`version`); what it left in the registry;
        then wait until every receiver serves what is in Production, at canary share 0."""
        from mlflow_hotswap_plugin.fleet.registry import RestRegistry
        from mlflow_hotswap_plugin.fleet.state import ROLLOUT_TAG, SHARE_TAG, resolve

        exit_code, seconds = self.run_rollout(version)
        client = RestRegistry(self.tracking_uri)  # the command's own reader
        record = client.get_model_version(MODEL_NAME, version).tags.get(ROLLOUT_TAG)
        share = client.get_registered_model(MODEL_NAME).tags.get(SHARE_TAG)
        production = resolve(client, MODEL_NAME, STAGE)
        outcome = {0: "promoted", 1: "rolled back"}.get(exit_code, "failed")
        say(f"  exit {exit_code} ({outcome}) after {seconds:.1f}s; in the "
            f"registry: {STAGE} is version {production}, {SHARE_TAG} is {share}, and version "
            f"{version}'s {ROLLOUT_TAG} says {record!r}")

        def settled(receiver: Process) -> bool:
            current = self.current(receiver)
            return bool(current["version"] == production
                        and (current.get("canary") or {}).get("percent") == 0)

        with progress(f"waiting for every receiver to serve version {production}, canary at "
                      "0 %") as waited:
            for receiver in self.receivers:
                wait_until(partial(settled, receiver), SWAP_TIMEOUT,
                           message=f"{receiver.url} serving version {production}, canary 0 %")
            waited["text"] = "done, by push"
        self.traffic.keep_going(str(production))
        say(f"  background client: {self.traffic.describe()}")
        fallbacks = sum(metric(r.url, "hotswap_canary_fallbacks_total", {"version": version})
                        for r in self.receivers)
        report = RolloutReport(
            version=version, exit_code=exit_code, seconds=round(seconds, 1),
            record=record, canary_percent=share, production=production,
            fallbacks=int(fallbacks),
            served={address(r): self.current(r)["version"] for r in self.receivers})
        self.summary.rollouts.append(asdict(report))
        return report

    def run_rollout(self, version: str) -> tuple[int, float]:
        """Run the command, printing its lines as they come, each with the time since its
        start; its exit code and how long it took."""
        parts = (["rollout", MODEL_NAME, "--canary", CANARY, "--promote-stage", STAGE],
                 ["--receivers", ",".join(r.url for r in self.receivers)], ROLLOUT_OPTIONS)
        say("  $ mlflow-hotswap " + " \\\n      ".join(" ".join(part) for part in parts))
        args = [arg for part in parts for arg in part]
        log_path = self.workdir / f"rollout-v{version}.log"
        tail = LogTail(log_path)
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "PYTHONUNBUFFERED": "1"}
        started = time.time()
        # A command, not a server: no port.
        command = self._start(f"rollout_v{version}", lambda: spawn(
            "mlflow-hotswap rollout", [HOTSWAP, *args], env, log_path, 0, cwd=self.workdir))
        deadline = time.monotonic() + ROLLOUT_TIMEOUT
        while True:
            exited = not command.alive()
            for _, line in tail.lines():
                say(f"    +{time.time() - started:4.1f}s  {line}")
            if exited:
                return command.popen.returncode, time.time() - started
            if time.monotonic() > deadline:
                raise RuntimeError(f"the rollout of version {version} did not end within "
                                   f"{ROLLOUT_TIMEOUT:.0f}s; see {log_path}")
            time.sleep(0.1)

    @staticmethod
    def current(receiver: Process) -> dict[str, Any]:
        answer = requests.get(receiver.url + "/models/current", timeout=5)
        answer.raise_for_status()
        return dict(answer.json())

    def show_predictions(self, receiver: Process) -> None:
        frame, labels = train_model.make_transactions(2_000, seed=2024)
        legit = [i for i in range(len(labels)) if labels[i] == 0][:3]
        fraud = [i for i in range(len(labels)) if labels[i] == 1][:2]
        rows = [legit[0], fraud[0], legit[1], fraud[1], legit[2]]
        sample = frame.iloc[rows]
        body = {"dataframe_split": {"columns": list(sample.columns),
                                    "data": sample.to_numpy().tolist()}}
        started = time.perf_counter()
        answer = requests.post(receiver.url + "/invocations", json=body, timeout=10)
        answer.raise_for_status()
        seconds = time.perf_counter() - started
        say(f"  POST /invocations with {len(rows)} transactions: answered by version "
            f"{answer.headers['X-Model-Version']} in {seconds * 1000:.0f} ms")
        word = {0: "legit", 1: "FRAUD"}
        for (_, row), predicted, row_id in zip(sample.iterrows(), answer.json()["predictions"],
                                               rows, strict=True):
            say(f"    ${row['amount']:>8,.2f} at {int(row['hour']):02d}h, "
                f"{'new device' if row['new_device'] else 'known device'}: "
                f"predicted {word[int(predicted)]:<5}  (actually {word[int(labels[row_id])]})")

    def stop(self) -> None:
        """The client, then every command and receiver side by side, then the MLflow server."""
        if self.client is not None:
            self.client.stop()
        self._note_pids()
        server = self.processes.get("mlflow_server")
        others = [process for process in self.processes.values() if process is not server]
        try:
            with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
                for stopping in [pool.submit(process.stop) for process in others]:
                    stopping.result()
        finally:
            if server is not None:
                server.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo.sh",
        description="The mlflow-hotswap demo: a local MLflow server with the plugin, three "
                    "receivers, a promotion and a rollback, then a rollout promoted and one "
                    "rolled back, while a client keeps predicting.")
    parser.add_argument("--keep", action="store_true",
                        help="keep the data folder (SQLite, artifacts, logs) afterwards")
    parser.add_argument("--summary-json", type=Path, metavar="PATH",
                        help="write the outcome (versions, swap latency, failures, pids) here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's usage telemetry would call out of 127.0.0.0/8 from every process started here.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.simplefilter("ignore")  # MLflow's deprecation and schema notes; its logs say more
    started = time.perf_counter()
    summary = Summary()
    workdir = Path(tempfile.mkdtemp(prefix="hotswap-demo-"))
    summary.data_dir = str(workdir)
    demo = Demo(workdir, summary)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        say("mlflow-hotswap demo: promote a model version, watch it swapped in, roll two more "
            "out step by step, without a failed request")
        demo.run()
    except Interrupted as exc:
        summary.interrupted = str(exc)
    except Exception as exc:  # noqa: BLE001 - report it, then stop everything all the same
        summary.error = f"{type(exc).__name__}: {exc}"
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        try:
            finish(demo, summary, keep=args.keep)
        finally:
            summary.seconds = round(time.perf_counter() - started, 1)
            if args.summary_json:
                args.summary_json.write_text(json.dumps(asdict(summary), indent=2) + "\n")
    if summary.interrupted:
        return 128 + signal.Signals[summary.interrupted].value
    if not summary.ok:
        return 1
    swap, predictions = summary.swap or {}, summary.predictions
    promoted, rolled_back = summary.rollouts
    say()
    say(f"Done in {summary.seconds:.0f}s: versions {' -> '.join(summary.versions_served)} served, "
        f"version {swap.get('version')} answering {swap.get('latency_seconds', 0):.3f}s after "
        f"its promotion; version {promoted['version']} promoted and version "
        f"{rolled_back['version']} rolled back by `mlflow-hotswap rollout`; "
        f"{predictions['failed']} failed predictions out of {predictions['answers']:,}.")
    say("Time per step: " + ", ".join(f"[{number}] {seconds:.1f}s"
                                      for number, seconds in summary.step_seconds.items()))
    return 0


def finish(demo: Demo, summary: Summary, keep: bool) -> None:
    """Say what went wrong, if anything; stop every process; remove the data unless kept."""
    say()
    if summary.interrupted:
        say(f"Interrupted ({summary.interrupted}).")
    elif summary.error:
        say(f"The demo failed: {summary.error}")
    elif not summary.ok:
        say("The demo failed: the promotion or the rollback was not served from the "
            "receiver's cache, or a receiver does not serve the promoted version.")
    say(f"[{STEPS}/{STEPS}] Stopping the receivers and the MLflow server")
    started = time.perf_counter()
    try:
        demo.stop()
    finally:
        summary.step_seconds[str(STEPS)] = round(time.perf_counter() - started, 1)
        pids = [pid for group in summary.pids.values() for pid in group]
        left = [pid for pid in pids if pid_running(pid)]
        listening = [f"{summary.hosts[role]}:{port}" for role, port in summary.ports.items()
                     if port_open(port, summary.hosts[role])]
        if left or listening:
            say(f"  STILL RUNNING: pids {left}, listening on {listening}")
        else:
            say(f"  stopped in {time.perf_counter() - started:.1f}s: processes "
                f"{', '.join(map(str, pids)) or 'none'} ended, ports closed")
        # Logs are worth keeping when something went wrong.
        summary.data_kept = keep or summary.error is not None
        workdir = demo.workdir
        if summary.data_kept:
            say(f"  kept {workdir}: mlflow-server.log, receiver-N.log, rollout-vN.log, "
                f"client.log, mlflow.db, artifacts/")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            say(f"  removed {workdir} (--keep keeps it)")


if __name__ == "__main__":
    sys.exit(main())
