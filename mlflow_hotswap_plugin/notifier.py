"""Deliver events to every receiver without ever holding up the registry call.

`Notifier.emit()` only puts work on bounded queues. Each target has a lane of its own (one
queue, one daemon thread) that resolves its hostname; each address it resolves to (the replicas
behind a Kubernetes headless Service) has a lane of its own that delivers, connecting to the IP
while keeping the original Host header (and TLS server name). So a receiver that hangs, or a
name that does not resolve, only ever delays its own lane, never the other receivers.

Each attempt has a timeout and is signed afresh (same delivery id, new timestamp), so a retry
after a long backoff is not stale at the receiver. Connection errors, DNS failures, timeouts,
429 and 5xx are retried with exponential backoff and jitter. A full lane drops the delivery and
logs it; so does process exit, for whatever is still queued or in flight.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import queue
import random
import signal
import socket
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError

from mlflow_hotswap_plugin import signing
from mlflow_hotswap_plugin.events import Event
from mlflow_hotswap_plugin.settings import Settings, redact

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]

USER_AGENT = "mlflow-hotswap-plugin"
RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
LANE_IDLE = 60.0  # seconds a lane's thread waits for work before it ends
EXIT_GRACE = 5.0  # at most this long (and at most HOTSWAP_TIMEOUT) at exit for deliveries


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, one family only: IPv4 if it has any, else IPv6.

    One family because a dual-stack name lists each replica once per family, and a receiver
    listening on one of them would otherwise be notified twice or fail once per change.
    """
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET]
    v6 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4 or v6))


@dataclass(frozen=True)
class Target:
    """A receiver URL, split into what the connection needs. Its repr shows no credentials."""

    url: str = field(repr=False)
    scheme: str
    host: str
    port: int
    host_header: str
    path: str = field(repr=False)
    auth_header: str | None = field(repr=False)

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"no host in {redact(url)!r}")  # Settings checks this first
        scheme = parts.scheme
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if parts.port in (None, default_port) else f"{bracketed}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        auth = None
        if parts.username is not None:
            basic = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = urllib3.util.make_headers(basic_auth=basic)["authorization"]
        return cls(url, scheme, host, port, host_header, path, auth)

    @property
    def safe_url(self) -> str:
        return redact(self.url)


@dataclass(frozen=True)
class Outcome:
    """How one delivery to one address ended."""

    target: Target
    address: str
    status: int | None
    error: str | None
    attempts: int

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class _Job:
    event: Event
    target: Target
    address: str | None  # None: resolve the hostname first, then fan out


_LaneKey = tuple[Target, str | None]


class _Lane:
    """One bounded queue and the one daemon thread that drains it in order.

    The thread ends after LANE_IDLE seconds without work (the notifier then forgets the lane),
    so lanes for addresses that went away cost nothing.
    """

    def __init__(self, notifier: Notifier, key: _LaneKey, size: int) -> None:
        self.key = key
        self.queue: queue.Queue[_Job] = queue.Queue(maxsize=size)
        self.in_flight: _Job | None = None
        self._notifier = notifier
        target, address = key
        name = f"hotswap-notify {target.host}" + (f" {address}" if address else "")
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                job = self.queue.get(timeout=self._notifier.lane_idle)
            except queue.Empty:
                if self._notifier._retire(self):
                    return
                continue
            self.in_flight = job
            try:
                self._notifier._handle(job)
            except Exception:  # the lane's boundary: log, carry on
                logger.exception("Notifying %s of %s failed", job.target.safe_url,
                                 job.event.name)
            finally:
                self.in_flight = None
                self._notifier._done(job.target)


class Notifier:
    def __init__(self, settings: Settings, resolver: Resolver = resolve,
                 backoff_base: float = BACKOFF_BASE, backoff_max: float = BACKOFF_MAX,
                 lane_idle: float = LANE_IDLE, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.targets = [Target.parse(url) for url in settings.targets]
        self.lane_idle = lane_idle
        self._resolve = resolver
        self._clock = clock
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._emitted = False  # only a notifier that has emitted has anything to report
        self._reset()
        _live.add(self)

    def _reset(self) -> None:
        """Fresh state: at construction, and in a child forked while lanes were running."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: dict[_LaneKey, _Lane] = {}
        self._pending: Counter[Target] = Counter()  # deliveries queued or in flight
        self._pool = urllib3.PoolManager(num_pools=64, maxsize=2, retries=False)
        self._closed = False

    # -- the registry side: never blocks ------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue `event` for every target; returns at once, whatever the receivers do."""
        if not self.targets:
            return
        self._emitted = True
        for target in self.targets:
            self._put(_Job(event, target, None))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued delivery has finished; False if `timeout` ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: not any(self._pending.values()), timeout)

    def close(self, timeout: float) -> dict[str, tuple[int, int]]:
        """Give deliveries `timeout` seconds to finish, then log, per target, what is dropped.

        Returns {safe target URL: (queued, in flight)} for the targets that still had work.
        Called at exit (SIGTERM, then atexit): only the first call waits and logs.
        """
        if self._closed:
            return {}
        self._closed = True
        self.flush(timeout)
        with self._lock:
            in_flight = Counter(lane.key[0] for lane in self._lanes.values()
                                if lane.in_flight is not None)
            left = {target.safe_url: (count - in_flight[target], in_flight[target])
                    for target, count in self._pending.items() if count > 0}
        for url, (queued, flying) in left.items():
            logger.warning("mlflow-hotswap: exiting with %d notification(s) for %s not "
                           "delivered (%d queued, %d in flight)", queued + flying, url, queued,
                           flying)
        return left

    def pending(self) -> dict[str, int]:
        """Deliveries queued or in flight, per target (its safe URL)."""
        with self._lock:
            return {target.safe_url: count for target, count in self._pending.items() if count}

    def _put(self, job: _Job) -> None:
        key = (job.target, job.address)
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane(self, key, self.settings.queue_size)
            try:
                lane.queue.put_nowait(job)
            except queue.Full:
                pass
            else:
                self._pending[job.target] += 1
                return
        where = f"{job.target.safe_url}" + (f" ({job.address})" if job.address else "")
        logger.warning("Notification queue for %s full (%d): dropped %s", where,
                       self.settings.queue_size, job.event.name)

    def _done(self, target: Target) -> None:
        with self._idle:
            self._pending[target] -= 1
            if not any(self._pending.values()):
                self._idle.notify_all()

    def _retire(self, lane: _Lane) -> bool:
        """Forget `lane` if it is still idle; its thread then ends. Same lock as `_put`."""
        with self._lock:
            if not lane.queue.empty():
                return False
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            return True

    def addresses(self, target: Target) -> list[str]:
        """Every address to deliver to for `target`; raises OSError when it cannot resolve."""
        return self._resolve(target.host, target.port)

    # -- the lanes' side ----------------------------------------------------------------------

    def _handle(self, job: _Job) -> None:
        if job.address is None:
            self._fan_out(job)
            return
        outcome = self.deliver(job.event, job.target, job.address)
        if outcome.accepted:
            logger.debug("Notified %s (%s) of %s", job.target.safe_url, job.address,
                         job.event.name)
        elif outcome.status == 401:
            logger.warning("%s (%s) rejected %s with 401: is HOTSWAP_WEBHOOK_SECRET the same on "
                           "both sides?", job.target.safe_url, job.address, job.event.name)
        else:
            reason = f"HTTP {outcome.status}" if outcome.status is not None else outcome.error
            logger.warning("Notifying %s (%s) of %s failed after %d attempt(s): %s",
                           job.target.safe_url, job.address, job.event.name, outcome.attempts,
                           reason)

    def _fan_out(self, job: _Job) -> None:
        """Resolve the target's name, retrying failures like connection errors, and queue one
        delivery per address on that address's lane."""
        attempt = 0
        while True:
            attempt += 1
            try:
                addresses = self.addresses(job.target)
                if not addresses:
                    raise OSError("no address")
                break
            except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
                if attempt > self.settings.max_retries:
                    logger.warning("Cannot resolve %s after %d attempt(s): %s not sent (%s)",
                                   job.target.host, attempt, job.event.name, exc)
                    return
            time.sleep(self._backoff(attempt, None))
        limit = self.settings.max_addresses
        if len(addresses) > limit:
            logger.warning("%s resolves to %d addresses: only the first %d are notified",
                           job.target.host, len(addresses), limit)
        for address in addresses[:limit]:
            self._put(_Job(job.event, job.target, address))

    def deliver(self, event: Event, target: Target, address: str,
                retries: int | None = None) -> Outcome:
        """Send one delivery to one address, retrying as configured; blocks; never raises."""
        retries = self.settings.max_retries if retries is None else retries
        body = event.to_json()
        delivery_id = str(uuid.uuid4())
        pool_kwargs: dict[str, Any] = {}
        if target.scheme == "https":
            # Connect to the IP, but check the certificate against the name in the URL.
            pool_kwargs = {"server_hostname": target.host, "assert_hostname": target.host}
        status: int | None = None
        error: str | None = None
        attempt = 0
        while True:
            attempt += 1
            retry_after: str | None = None
            try:
                pool = self._pool.connection_from_host(address, target.port, target.scheme,
                                                       pool_kwargs=pool_kwargs)
                response = pool.urlopen("POST", target.path, body=body,
                                        headers=self._headers(target, delivery_id, body),
                                        timeout=urllib3.Timeout(total=self.settings.timeout),
                                        retries=False, redirect=False, assert_same_host=False)
                status, error = response.status, None
                retry_after = response.headers.get("Retry-After")
                if status not in RETRY_STATUSES:
                    return Outcome(target, address, status, None, attempt)
            except HTTPError as exc:
                status, error = None, _describe(exc)
            if attempt > retries:
                return Outcome(target, address, status, error, attempt)
            time.sleep(self._backoff(attempt, retry_after))

    def _headers(self, target: Target, delivery_id: str, body: bytes) -> dict[str, str]:
        """Headers for one attempt: a timestamp of now, and a signature over it."""
        timestamp = str(int(self._clock()))
        headers = {"Content-Type": "application/json", "Host": target.host_header,
                   "User-Agent": USER_AGENT,
                   signing.DELIVERY_ID_HEADER: delivery_id, signing.TIMESTAMP_HEADER: timestamp}
        if self.settings.secret:
            headers[signing.SIGNATURE_HEADER] = signing.sign(self.settings.secret, delivery_id,
                                                             timestamp, body)
        if target.auth_header:
            headers["Authorization"] = target.auth_header
        return headers

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(delay / 2, delay)  # jitter: replicas don't retry in step
        if retry_after and retry_after.strip().isascii() and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after), self._backoff_max))
        return delay


def _describe(exc: BaseException) -> str:
    # urllib3 wraps the cause (e.g. "Connection refused") in a long message; keep it short.
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"


# Lanes are threads, and threads do not survive fork(): a child (a server worker forked after
# the store was built) starts with no lanes and fresh locks, so its first emit starts its own.
_live: weakref.WeakSet[Notifier] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for notifier in list(_live):
        notifier._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_all(grace: float) -> None:
    """Close every notifier that has emitted, all within one `grace` period."""
    deadline = time.monotonic() + grace
    for notifier in list(_live):
        if notifier._emitted:
            left = max(0.0, deadline - time.monotonic())
            notifier.close(min(left, notifier.settings.timeout))


def _hook_sigterm() -> None:
    """Log what is dropped when the process is stopped by SIGTERM, too.

    atexit never runs there: uvicorn (which serves MLflow 3.x) re-raises SIGTERM with the
    default action once it has shut down. So the handler in place when the plugin is imported
    (uvicorn's or gunicorn's, or none) is wrapped: first give deliveries EXIT_GRACE seconds and
    log what is left, then do what it did. Signal handlers belong to the main thread: imported
    elsewhere, only atexit reports.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None or previous == signal.SIG_IGN:
        return  # set outside Python, or ignored on purpose: leave it alone

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        _close_all(EXIT_GRACE)
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)


# A short-lived `MlflowClient(registry_uri="hotswap+...")` script would otherwise exit before its
# notifications leave, and a server would drop them silently.
atexit.register(_close_all, EXIT_GRACE)
_hook_sigterm()
